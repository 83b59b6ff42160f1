#include "data/DatasetLayout.hpp"

#include <algorithm>
#include <ctime>

#include "util/Error.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {

std::int64_t DatasetMeta::sample_bytes() const {
  std::int64_t n = 1;
  for (auto d : sample_shape) n *= d;
  return n;
}

std::int64_t chunk_rows(std::int64_t sample_bytes, std::int64_t total_rows) {
  const std::int64_t target = (std::int64_t(1) << 20) / std::max<std::int64_t>(1, sample_bytes);
  return std::max<std::int64_t>(1, std::min(std::max<std::int64_t>(1, target), std::max<std::int64_t>(1, total_rows)));
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
  m.num_classes = file.read_int_attr("/", "num_classes");
  if (m.num_classes < 2) throw DataError(p + ": num_classes is " + std::to_string(m.num_classes) + ", expected >= 2");
  if (file.has("/class_names")) m.class_names = file.read_string_list("/class_names");

  for (SplitMeta* s : {&m.train, &m.test}) {
    s->name = s == &m.train ? "train" : "test";
    const std::string images = "/" + s->name + "/images", labels = "/" + s->name + "/labels";
    const DatasetInfo img = dataset_info(file, images);
    const DatasetInfo lab = dataset_info(file, labels);
    if (img.shape.size() != 4 || img.dtype != "uint8") {
      std::string shape;
      for (auto d : img.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      throw DataError(p + ": " + images + ": expected uint8 [N, C, H, W], found " + img.dtype + " [" + shape + "]");
    }
    if (lab.shape.size() != 1 || (lab.dtype != "int32")) {
      throw DataError(p + ": " + labels + ": expected int32 [N], found " + lab.dtype + " with " +
                      std::to_string(lab.shape.size()) + " dimensions");
    }
    if (lab.shape[0] != img.shape[0]) {
      throw DataError(p + ": " + labels + " has " + std::to_string(lab.shape[0]) + " rows but " + images + " has " +
                      std::to_string(img.shape[0]));
    }
    const std::vector<std::int64_t> shape(img.shape.begin() + 1, img.shape.end());
    if (s == &m.train) {
      m.sample_shape = shape;
    } else if (shape != m.sample_shape) {
      throw DataError(p + ": " + images + ": sample shape differs from /train/images");
    }
    s->count = img.shape[0];
    if (s->count == 0) throw DataError(p + ": " + images + " is empty");
    s->images_sha256 = file.has_attr(images, "sha256") ? file.read_string_attr(images, "sha256") : "";
    s->labels_sha256 = file.has_attr(labels, "sha256") ? file.read_string_attr(labels, "sha256") : "";
  }
  return m;
}

void write_dataset_header(H5File& file, const std::string& name, const std::string& source,
                          const std::vector<std::string>& class_names) {
  char created[32] = {0};
  const std::time_t now = std::time(nullptr);
  std::strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  file.write_string_attr("/", "format", kFormatName);
  file.write_int_attr("/", "format_version", kFormatVersion);
  file.write_string_attr("/", "name", name);
  file.write_string_attr("/", "task", "classification");
  file.write_int_attr("/", "num_classes", static_cast<std::int64_t>(class_names.size()));
  file.write_string_attr("/", "source", source);
  file.write_string_attr("/", "created", created);
  file.write_string_list("/class_names", class_names);
}

void write_split(H5File& file, const std::string& split, const std::vector<std::int64_t>& sample_shape,
                 const std::vector<std::uint8_t>& images, const std::vector<std::int32_t>& labels) {
  const std::string ctx = file.path() + ": writing /" + split;
  H5Id group(h5_check(H5Gcreate2(file.id(), ("/" + split).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), ctx));
  std::int64_t sample_bytes = 1;
  for (auto d : sample_shape) sample_bytes *= d;
  const auto n = static_cast<hsize_t>(labels.size());
  if (images.size() != n * static_cast<std::uint64_t>(sample_bytes)) {
    throw DataError(ctx + ": " + std::to_string(images.size()) + " image bytes do not match " + std::to_string(n) +
                    " labels");
  }
  {
    std::vector<hsize_t> dims{n}, chunk{static_cast<hsize_t>(chunk_rows(sample_bytes, static_cast<std::int64_t>(n)))};
    for (auto d : sample_shape) {
      dims.push_back(static_cast<hsize_t>(d));
      chunk.push_back(static_cast<hsize_t>(d));
    }
    H5Id space(h5_check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), ctx));
    H5Id dcpl(h5_check(H5Pcreate(H5P_DATASET_CREATE), ctx));
    h5_check(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), ctx);
    const std::string name = "/" + split + "/images";
    H5Id ds(h5_check(H5Dcreate2(file.id(), name.c_str(), H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), ctx));
    h5_check(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, images.data()), ctx);
    file.write_string_attr(name, "sha256", Sha256::hex(images.data(), images.size()));
  }
  {
    hsize_t dims[1] = {n};
    hsize_t chunk[1] = {static_cast<hsize_t>(chunk_rows(4, static_cast<std::int64_t>(n)))};
    H5Id space(h5_check(H5Screate_simple(1, dims, nullptr), ctx));
    H5Id dcpl(h5_check(H5Pcreate(H5P_DATASET_CREATE), ctx));
    h5_check(H5Pset_chunk(dcpl, 1, chunk), ctx);
    const std::string name = "/" + split + "/labels";
    H5Id ds(h5_check(H5Dcreate2(file.id(), name.c_str(), H5T_STD_I32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), ctx));
    h5_check(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data()), ctx);
    // Hash the little-endian bytes as stored (this is a little-endian host).
    file.write_string_attr(name, "sha256", Sha256::hex(labels.data(), labels.size() * sizeof(std::int32_t)));
  }
}

}  // namespace hpctrain
