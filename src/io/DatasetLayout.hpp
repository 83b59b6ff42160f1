#pragma once
// The canonical HDF5 layout of a data set (docs/data-format.md):
//   /                  attrs: format, format_version, name, task, num_classes, source, created
//   /class_names       fixed-length strings [num_classes] (classification)
//   /feature_names     fixed-length strings [F] (tabular data)
//   /train/images      uint8 [N, C, H, W] (image data)    or /train/features float32 [N, F] (tabular) or [N, V, T]
//   (series) /train/labels      int32 [N] (classification)         or /train/targets float32 [N] (regression)
//   or [N, S] (S target values per sample: a series' consecutive future steps) /test/... as for train
// Every split dataset is chunked by whole samples and carries attr sha256: the hex SHA-256
// of the dataset's bytes in C order (h5py: ds[()].tobytes()).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/Hdf5.hpp"

namespace hpctrain {

inline constexpr const char* kFormatName = "hpctrain-dataset";
inline constexpr std::int64_t kFormatVersion = 1;

enum class Task { Classification, Regression };
std::string task_name(Task task);  // "classification" | "regression"

struct SplitMeta {
  std::string name;  // "train" or "test"
  std::int64_t count = 0;
  std::string inputs_sha256;   // of /split/images or /split/features
  std::string targets_sha256;  // of /split/labels or /split/targets
};

struct DatasetMeta {
  std::string path;
  std::string name;
  std::string source;
  std::string created;
  Task task = Task::Classification;
  std::int64_t num_classes = 0;  // classification: >= 2; regression: 0
  std::vector<std::string> class_names;
  std::vector<std::string> feature_names;  // tables: one per feature column; series: one per variable
  std::string inputs_name = "images";      // "images" (uint8 [N, C, H, W]) or "features" (float32 [N, F] or [N, V, T])
  std::string targets_name = "labels";     // "labels" (int32 [N]) or "targets" (float32 [N] or [N, S])
  std::int64_t target_width = 1;           // regression: target values per sample (S; 1 for [N])
  // Windows of a series (root attributes window and horizon, from `import timeseries|synthetic`):
  // rows in time order, one step apart; series_reach = horizon + span - 1, the steps from a
  // window's end to its last target. 0 and false for other data.
  bool series = false;
  std::int64_t series_reach = 0;
  std::vector<std::int64_t> sample_shape;  // C, H, W for images; F for features
  SplitMeta train;
  SplitMeta test;

  bool float_inputs() const { return inputs_name == "features"; }
  std::int64_t input_element_size() const { return float_inputs() ? 4 : 1; }
  std::int64_t sample_elements() const;  // product of sample_shape
  std::int64_t sample_bytes() const;     // sample_elements() * input_element_size()
  std::string inputs_path(const std::string& split) const { return "/" + split + "/" + inputs_name; }
  std::string targets_path(const std::string& split) const { return "/" + split + "/" + targets_name; }
};

// Reads and checks the layout (presence, ranks, dtypes, matching counts and shapes).
// Throws DataError naming the file and the object that is wrong.
DatasetMeta read_dataset_meta(const H5File& file);

// Writes one split (images and labels, chunked by whole samples) with their hashes.
void write_split(H5File& file, const std::string& split, const std::vector<std::int64_t>& sample_shape,
                 const std::vector<std::uint8_t>& images, const std::vector<std::int32_t>& labels);
void write_dataset_header(H5File& file, const std::string& name, const std::string& source,
                          const std::vector<std::string>& class_names);

// Tabular data (features float32 [N, F]): header and splits. Classification writes
// /class_names and labels (int32 in [0, class_names.size())); regression writes targets
// (float32) and no num_classes attribute. `features` holds N * feature_names.size() values.
void write_tabular_header(H5File& file, const std::string& name, const std::string& source, Task task,
                          const std::vector<std::string>& feature_names, const std::vector<std::string>& class_names);
void write_tabular_split(H5File& file, const std::string& split, std::int64_t num_features,
                         const std::vector<float>& features, const std::vector<std::int32_t>* labels,
                         const std::vector<float>* targets);

// Writes a data set file atomically and durably (write_hdf5_atomically): `write` fills a
// temporary file beside `output`, which is closed checked, fsynced and renamed over
// `output`; on any failure the temporary file is removed and `output` is untouched.
void write_dataset_atomically(const std::string& output, const std::function<void(H5File&)>& write);

// Float samples of any shape (a series' windows: [V, T]) with regression targets,
// `target_width` per sample (stored as [N] for 1, [N, S] for more).
void write_float_split(H5File& file, const std::string& split, const std::vector<std::int64_t>& sample_shape,
                       const std::vector<float>& features, const std::vector<float>& targets,
                       std::int64_t target_width = 1);

// The SHA-256 of dataset `name` as its sha256 attribute records it (the bytes in C order),
// read serially in blocks of whole rows (about 64 MiB). `visit`, when given, sees each block
// as read: its first row's bytes and its row count (uint8, int32 or float32 elements, as
// stored). What `hpctrain inspect` verifies; training verifies in parallel instead
// (data/ShardedDataset, the chained hash over the ranks' shards).
std::string dataset_sha256(const H5File& file, const std::string& name,
                           const std::function<void(const void* rows, std::int64_t count)>& visit = {});

// Rows per chunk for samples of `sample_bytes`: whole samples, about 1 MiB a chunk.
std::int64_t chunk_rows(std::int64_t sample_bytes, std::int64_t total_rows);

}  // namespace hpctrain
