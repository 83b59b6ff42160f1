#pragma once
// The canonical HDF5 layout of an image-classification data set (docs/data-format.md):
//   /                  attrs: format, format_version, name, task, num_classes, source, created
//   /class_names       fixed-length strings [num_classes]
//   /train/images      uint8 [N, C, H, W], chunked by whole samples; attr sha256
//   /train/labels      int32 [N]; attr sha256
//   /test/images, /test/labels  as for train
// sha256 is the hex SHA-256 of the dataset's bytes in C order (h5py: ds[()].tobytes()).
#include <cstdint>
#include <string>
#include <vector>

#include "data/Hdf5.hpp"

namespace hpctrain {

inline constexpr const char* kFormatName = "hpctrain-dataset";
inline constexpr std::int64_t kFormatVersion = 1;

struct SplitMeta {
  std::string name;  // "train" or "test"
  std::int64_t count = 0;
  std::string images_sha256;
  std::string labels_sha256;
};

struct DatasetMeta {
  std::string path;
  std::string name;
  std::string source;
  std::string created;
  std::int64_t num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<std::int64_t> sample_shape;  // C, H, W
  SplitMeta train;
  SplitMeta test;

  std::int64_t sample_bytes() const;
};

// Reads and checks the layout (presence, ranks, dtypes, matching counts and shapes).
// Throws DataError naming the file and the object that is wrong.
DatasetMeta read_dataset_meta(const H5File& file);

// Writes one split (images and labels, chunked by whole samples) with their hashes.
void write_split(H5File& file, const std::string& split, const std::vector<std::int64_t>& sample_shape,
                 const std::vector<std::uint8_t>& images, const std::vector<std::int32_t>& labels);
void write_dataset_header(H5File& file, const std::string& name, const std::string& source,
                          const std::vector<std::string>& class_names);

// Rows per chunk for samples of `sample_bytes`: whole samples, about 1 MiB a chunk.
std::int64_t chunk_rows(std::int64_t sample_bytes, std::int64_t total_rows);

}  // namespace hpctrain
