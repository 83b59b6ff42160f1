#include "io/Importer.hpp"

#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <vector>

#include "io/DatasetLayout.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

std::string find_idx(const std::string& dir, const std::string& stem) {
  for (const std::string& candidate : {dir + "/" + stem, dir + "/" + stem + ".gz"}) {
    if (exists(candidate)) return candidate;
  }
  throw DataError(dir + ": missing " + stem + " (or " + stem + ".gz)");
}

struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

// idx: two zero bytes, a type byte (0x08: unsigned byte), a dimension count, big-endian
// int32 dimensions, then the data. gzread reads plain and gzip files alike.
IdxArray read_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw DataError(path + ": cannot open");
  struct Closer {
    gzFile f;
    ~Closer() { gzclose(f); }
  } closer{f};
  unsigned char header[4];
  if (gzread(f, header, 4) != 4) throw DataError(path + ": truncated idx header");
  if (header[0] != 0 || header[1] != 0 || header[2] != 0x08) {
    throw DataError(path + ": not an unsigned-byte idx file (magic " + std::to_string(header[0]) + " " +
                    std::to_string(header[1]) + " " + std::to_string(header[2]) + ")");
  }
  const int ndims = header[3];
  if (ndims < 1 || ndims > 4) throw DataError(path + ": idx file with " + std::to_string(ndims) + " dimensions");
  IdxArray a;
  std::int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    unsigned char d[4];
    if (gzread(f, d, 4) != 4) throw DataError(path + ": truncated idx header");
    const std::int64_t dim = (std::int64_t(d[0]) << 24) | (d[1] << 16) | (d[2] << 8) | d[3];
    a.dims.push_back(dim);
    total *= dim;
  }
  a.data.resize(static_cast<std::size_t>(total));
  std::size_t got = 0;
  while (got < a.data.size()) {
    const unsigned want = static_cast<unsigned>(std::min<std::size_t>(a.data.size() - got, 1u << 30));
    const int n = gzread(f, a.data.data() + got, want);
    if (n <= 0) {
      throw DataError(path + ": truncated: expected " + std::to_string(total) + " data bytes, found " +
                      std::to_string(got));
    }
    got += static_cast<std::size_t>(n);
  }
  return a;
}

void import_split(H5File& out, const std::string& dir, const std::string& prefix, const std::string& split,
                  std::int64_t num_classes, std::int64_t& count) {
  const std::string images_path = find_idx(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx(dir, prefix + "-labels-idx1-ubyte");
  IdxArray images = read_idx(images_path);
  IdxArray labels = read_idx(labels_path);
  if (images.dims.size() != 3) throw DataError(images_path + ": expected 3 dimensions (N, H, W)");
  if (labels.dims.size() != 1) throw DataError(labels_path + ": expected 1 dimension (N)");
  if (images.dims[0] != labels.dims[0]) {
    throw DataError(images_path + " has " + std::to_string(images.dims[0]) + " images but " + labels_path + " has " +
                    std::to_string(labels.dims[0]) + " labels");
  }
  std::vector<std::int32_t> y(labels.data.size());
  for (std::size_t i = 0; i < y.size(); ++i) {
    y[i] = labels.data[i];
    if (y[i] >= num_classes) {
      throw DataError(labels_path + ": label " + std::to_string(y[i]) + " at index " + std::to_string(i) +
                      " is out of range [0, " + std::to_string(num_classes) + ")");
    }
  }
  write_split(out, split, {1, images.dims[1], images.dims[2]}, images.data, y);
  count = images.dims[0];
}

}  // namespace

std::string default_idx_source(const std::string& kind) {
  if (kind == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  if (kind == "mnist") return "/usr/share/datasets/mnist";
  return "";
}

ImportResult import_idx_dataset(const std::string& kind, const std::string& source_dir, const std::string& output) {
  std::vector<std::string> classes;
  if (kind == "fashion-mnist") {
    classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  } else if (kind == "mnist") {
    for (int i = 0; i < 10; ++i) classes.push_back(std::to_string(i));
  } else {
    throw UsageError("import: unknown data set kind \"" + kind + "\" (known: fashion-mnist, mnist)");
  }
  struct stat st {};
  if (stat(source_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw DataError(
        source_dir + ": no such folder" +
        (kind == "fashion-mnist" ? std::string(" (on Debian: apt-get install dataset-fashion-mnist)") : ""));
  }
  ImportResult r;
  r.output = output;
  write_dataset_atomically(output, [&](H5File& out) {
    write_dataset_header(out, kind, "idx files from " + source_dir, classes);
    import_split(out, source_dir, "train", "train", static_cast<std::int64_t>(classes.size()), r.train_count);
    import_split(out, source_dir, "t10k", "test", static_cast<std::int64_t>(classes.size()), r.test_count);
  });
  return r;
}

}  // namespace hpctrain
