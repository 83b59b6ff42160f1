#include "io/DatasetLayout.hpp"

#include <cstdio>

#include <algorithm>

#include "util/Error.hpp"
#include "util/Sha256.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

std::string task_name(Task task) {
  return task == Task::Regression ? "regression" : "classification";
}

std::int64_t DatasetMeta::sample_elements() const {
  std::int64_t n = 1;
  for (auto d : sample_shape) n *= d;
  return n;
}

std::int64_t DatasetMeta::sample_bytes() const {
  return sample_elements() * input_element_size();
}

std::int64_t chunk_rows(std::int64_t sample_bytes, std::int64_t total_rows) {
  const std::int64_t target = (std::int64_t(1) << 20) / std::max<std::int64_t>(1, sample_bytes);
  return std::max<std::int64_t>(1, std::min(std::max<std::int64_t>(1, target), std::max<std::int64_t>(1, total_rows)));
}

std::string dataset_sha256(const H5File& file, const std::string& name,
                           const std::function<void(const void* rows, std::int64_t count)>& visit) {
  const DatasetInfo info = dataset_info(file, name);
  std::int64_t row_bytes = static_cast<std::int64_t>(info.element_size);
  for (std::size_t i = 1; i < info.shape.size(); ++i) row_bytes *= info.shape[i];
  const std::int64_t rows = info.shape.empty() ? 0 : info.shape[0];
  const std::int64_t block = std::max<std::int64_t>(1, (64 << 20) / std::max<std::int64_t>(1, row_bytes));
  std::vector<std::uint8_t> buffer(static_cast<std::size_t>(std::min(block, rows) * row_bytes));
  const hid_t mem = info.dtype == "int32"     ? H5T_NATIVE_INT32
                    : info.dtype == "float32" ? H5T_NATIVE_FLOAT
                                              : H5T_NATIVE_UINT8;
  Sha256 hash;
  for (std::int64_t r = 0; r < rows; r += block) {
    const std::int64_t n = std::min(block, rows - r);
    read_rows(file, name, r, n, mem, buffer.data());
    hash.update(buffer.data(), static_cast<std::size_t>(n * row_bytes));
    if (visit) visit(buffer.data(), n);
  }
  return hash.hex_digest();
}

DatasetMeta read_dataset_meta(const H5File& file) {
  const std::string& p = file.path();
  DatasetMeta m;
  m.path = p;
  if (!file.has_attr("/", "format") || file.read_string_attr("/", "format") != kFormatName) {
    throw DataError(p + ": not an hpctrain data set (root attribute format=\"" + std::string(kFormatName) +
                    "\" missing); create one with `hpctrain import`");
  }
  const std::int64_t version = file.read_int_attr("/", "format_version");
  if (version != kFormatVersion) {
    throw DataError(p + ": data set format version " + std::to_string(version) + ", this hpctrain reads version " +
                    std::to_string(kFormatVersion));
  }
  m.name = file.read_string_attr("/", "name");
  m.source = file.has_attr("/", "source") ? file.read_string_attr("/", "source") : "";
  m.created = file.has_attr("/", "created") ? file.read_string_attr("/", "created") : "";
  const std::string task = file.has_attr("/", "task") ? file.read_string_attr("/", "task") : "classification";
  if (task != "classification" && task != "regression") {
    throw DataError(p + ": root attribute task=\"" + task + "\", expected \"classification\" or \"regression\"");
  }
  m.task = task == "regression" ? Task::Regression : Task::Classification;
  if (m.task == Task::Classification) {
    if (!file.has_attr("/", "num_classes")) {
      throw DataError(p + ": attribute /@num_classes is missing (required for task \"classification\")");
    }
    m.num_classes = file.read_int_attr("/", "num_classes");
    if (m.num_classes < 2) throw DataError(p + ": num_classes is " + std::to_string(m.num_classes) + ", expected >= 2");
    if (file.has("/class_names")) m.class_names = file.read_string_list("/class_names");
  }
  if (file.has("/feature_names")) m.feature_names = file.read_string_list("/feature_names");
  const bool tabular = file.has("/train/features");
  if (!tabular && !file.has("/train/images")) {
    throw DataError(p + ": dataset /train/images (image data) or /train/features (tabular data) is missing");
  }
  for (const char* split : {"train", "test"}) {
    const std::string images = "/" + std::string(split) + "/images", features = "/" + std::string(split) + "/features";
    if (file.has(images) && file.has(features)) {
      throw DataError(p + ": has both " + images + " and " + features + "; a data set holds one kind of input");
    }
  }
  m.inputs_name = tabular ? "features" : "images";
  if (file.has_attr("/", "window") && file.has_attr("/", "horizon")) {
    m.series = true;
    const std::int64_t span = file.has_attr("/", "span") ? file.read_int_attr("/", "span") : 1;
    m.series_reach = std::max<std::int64_t>(0, file.read_int_attr("/", "horizon") + span - 1);
  }
  m.targets_name = m.task == Task::Regression ? "targets" : "labels";

  for (SplitMeta* s : {&m.train, &m.test}) {
    s->name = s == &m.train ? "train" : "test";
    const std::string inputs = m.inputs_path(s->name), targets = m.targets_path(s->name);
    const DatasetInfo in = dataset_info(file, inputs);
    const DatasetInfo out = dataset_info(file, targets);
    const bool inputs_ok = tabular ? ((in.shape.size() == 2 || in.shape.size() == 3) && in.dtype == "float32")
                                   : (in.shape.size() == 4 && in.dtype == "uint8");
    if (!inputs_ok) {
      std::string shape;
      for (auto d : in.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      throw DataError(p + ": " + inputs + ": expected " +
                      (tabular ? "float32 [N, F] or [N, V, T]" : "uint8 [N, C, H, W]") + ", found " + in.dtype + " [" +
                      shape + "]");
    }
    const bool regression = m.task == Task::Regression;
    const std::string target_type = regression ? "float32" : "int32";
    const bool target_rank_ok = out.shape.size() == 1 || (regression && out.shape.size() == 2 && out.shape[1] >= 1);
    if (!target_rank_ok || out.dtype != target_type) {
      throw DataError(p + ": " + targets + ": expected " + target_type + (regression ? " [N] or [N, S]" : " [N]") +
                      ", found " + out.dtype + " with " + std::to_string(out.shape.size()) + " dimensions");
    }
    const std::int64_t width = out.shape.size() == 2 ? out.shape[1] : 1;
    if (s == &m.train) {
      m.target_width = width;
    } else if (width != m.target_width) {
      throw DataError(p + ": " + targets + ": " + std::to_string(width) + " target values per sample, but " +
                      m.targets_path("train") + " has " + std::to_string(m.target_width));
    }
    if (out.shape[0] != in.shape[0]) {
      throw DataError(p + ": " + targets + " has " + std::to_string(out.shape[0]) + " rows but " + inputs + " has " +
                      std::to_string(in.shape[0]));
    }
    const std::vector<std::int64_t> shape(in.shape.begin() + 1, in.shape.end());
    if (s == &m.train) {
      m.sample_shape = shape;
    } else if (shape != m.sample_shape) {
      throw DataError(p + ": " + inputs + ": sample shape differs from " + m.inputs_path("train"));
    }
    s->count = in.shape[0];
    if (s->count == 0) throw DataError(p + ": " + inputs + " is empty");
    s->inputs_sha256 = file.has_attr(inputs, "sha256") ? file.read_string_attr(inputs, "sha256") : "";
    s->targets_sha256 = file.has_attr(targets, "sha256") ? file.read_string_attr(targets, "sha256") : "";
  }
  // One name per feature of a table ([F]), per variable of a series ([V, T]).
  if (!m.feature_names.empty() && static_cast<std::int64_t>(m.feature_names.size()) != m.sample_shape.front()) {
    throw DataError(p + ": /feature_names has " + std::to_string(m.feature_names.size()) + " names for " +
                    std::to_string(m.sample_shape.front()) + (m.sample_shape.size() == 1 ? " features" : " variables"));
  }
  return m;
}

namespace {

// The root attributes every data set carries, whatever its inputs.
void write_root_attrs(H5File& file, const std::string& name, const std::string& source, Task task,
                      const std::vector<std::string>& class_names) {
  file.write_string_attr("/", "format", kFormatName);
  file.write_int_attr("/", "format_version", kFormatVersion);
  file.write_string_attr("/", "name", name);
  file.write_string_attr("/", "task", task_name(task));
  if (task == Task::Classification) {
    if (class_names.size() < 2) {
      throw DataError(file.path() + ": a classification data set needs at least 2 class names, got " +
                      std::to_string(class_names.size()));
    }
    file.write_int_attr("/", "num_classes", static_cast<std::int64_t>(class_names.size()));
  }
  file.write_string_attr("/", "source", source);
  file.write_string_attr("/", "created", utc_timestamp());
  if (task == Task::Classification) file.write_string_list("/class_names", class_names);
}

// One split dataset: chunked by whole samples (about 1 MiB), with the SHA-256 of its bytes.
void write_rows(H5File& file, const std::string& name, hid_t file_type, hid_t mem_type, std::int64_t rows,
                const std::vector<std::int64_t>& sample_shape, std::size_t element_size, const void* data) {
  const std::string ctx = file.path() + ": writing " + name;
  std::int64_t sample_bytes = static_cast<std::int64_t>(element_size);
  for (auto d : sample_shape) sample_bytes *= d;
  std::vector<hsize_t> dims{static_cast<hsize_t>(rows)}, chunk{static_cast<hsize_t>(chunk_rows(sample_bytes, rows))};
  for (auto d : sample_shape) {
    dims.push_back(static_cast<hsize_t>(d));
    chunk.push_back(static_cast<hsize_t>(d));
  }
  H5Id space(h5_check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), ctx));
  H5Id dcpl(h5_check(H5Pcreate(H5P_DATASET_CREATE), ctx));
  h5_check(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), ctx);
  H5Id ds(h5_check(H5Dcreate2(file.id(), name.c_str(), file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), ctx));
  h5_check(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), ctx);
  // The little-endian bytes as stored (this is a little-endian host).
  file.write_string_attr(name, "sha256", Sha256::hex(data, static_cast<std::size_t>(rows * sample_bytes)));
}

}  // namespace

void write_dataset_header(H5File& file, const std::string& name, const std::string& source,
                          const std::vector<std::string>& class_names) {
  write_root_attrs(file, name, source, Task::Classification, class_names);
}

void write_tabular_header(H5File& file, const std::string& name, const std::string& source, Task task,
                          const std::vector<std::string>& feature_names, const std::vector<std::string>& class_names) {
  write_root_attrs(file, name, source, task, class_names);
  file.write_string_list("/feature_names", feature_names);
}

void write_tabular_split(H5File& file, const std::string& split, std::int64_t num_features,
                         const std::vector<float>& features, const std::vector<std::int32_t>* labels,
                         const std::vector<float>* targets) {
  const std::string ctx = file.path() + ": writing /" + split;
  if ((labels == nullptr) == (targets == nullptr)) {
    throw DataError(ctx + ": expected either labels (classification) or targets (regression)");
  }
  const auto rows = static_cast<std::int64_t>(labels ? labels->size() : targets->size());
  if (static_cast<std::int64_t>(features.size()) != rows * num_features) {
    throw DataError(ctx + ": " + std::to_string(features.size()) + " feature values do not match " +
                    std::to_string(rows) + " rows of " + std::to_string(num_features));
  }
  H5Id group(h5_check(H5Gcreate2(file.id(), ("/" + split).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), ctx));
  write_rows(file, "/" + split + "/features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows, {num_features}, sizeof(float),
             features.data());
  if (labels) {
    write_rows(file, "/" + split + "/labels", H5T_STD_I32LE, H5T_NATIVE_INT32, rows, {}, sizeof(std::int32_t),
               labels->data());
  } else {
    write_rows(file, "/" + split + "/targets", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows, {}, sizeof(float),
               targets->data());
  }
}

void write_split(H5File& file, const std::string& split, const std::vector<std::int64_t>& sample_shape,
                 const std::vector<std::uint8_t>& images, const std::vector<std::int32_t>& labels) {
  const std::string ctx = file.path() + ": writing /" + split;
  std::int64_t sample_bytes = 1;
  for (auto d : sample_shape) sample_bytes *= d;
  const auto n = static_cast<std::int64_t>(labels.size());
  if (static_cast<std::int64_t>(images.size()) != n * sample_bytes) {
    throw DataError(ctx + ": " + std::to_string(images.size()) + " image bytes do not match " + std::to_string(n) +
                    " labels");
  }
  H5Id group(h5_check(H5Gcreate2(file.id(), ("/" + split).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), ctx));
  write_rows(file, "/" + split + "/images", H5T_STD_U8LE, H5T_NATIVE_UINT8, n, sample_shape, 1, images.data());
  write_rows(file, "/" + split + "/labels", H5T_STD_I32LE, H5T_NATIVE_INT32, n, {}, sizeof(std::int32_t),
             labels.data());
}

void write_float_split(H5File& file, const std::string& split, const std::vector<std::int64_t>& sample_shape,
                       const std::vector<float>& features, const std::vector<float>& targets,
                       std::int64_t target_width) {
  std::int64_t elements = 1;
  for (auto d : sample_shape) elements *= d;
  const auto rows = static_cast<std::int64_t>(targets.size()) / std::max<std::int64_t>(1, target_width);
  if (static_cast<std::int64_t>(features.size()) != rows * elements) {
    throw DataError(file.path() + ": writing /" + split + ": " + std::to_string(features.size()) +
                    " values do not match " + std::to_string(rows) + " samples of " + std::to_string(elements));
  }
  const std::string ctx = file.path() + ": writing /" + split;
  H5Id group(h5_check(H5Gcreate2(file.id(), ("/" + split).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), ctx));
  write_rows(file, "/" + split + "/features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows, sample_shape, sizeof(float),
             features.data());
  const std::vector<std::int64_t> target_shape =
      target_width > 1 ? std::vector<std::int64_t>{target_width} : std::vector<std::int64_t>{};
  write_rows(file, "/" + split + "/targets", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows, target_shape, sizeof(float),
             targets.data());
}

void write_dataset_atomically(const std::string& output, const std::function<void(H5File&)>& write) {
  write_hdf5_atomically(output, write);
}

}  // namespace hpctrain
