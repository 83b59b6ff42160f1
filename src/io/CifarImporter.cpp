#include "io/CifarImporter.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <vector>

#include "io/DatasetLayout.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

constexpr std::int64_t kImageBytes = 3 * 32 * 32;

struct Records {
  std::vector<std::uint8_t> images;
  std::vector<std::int32_t> labels;
};

std::vector<std::uint8_t> read_whole(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw DataError(path + ": missing");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(st.st_size));
  if (!bytes.empty() && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw DataError(path + ": read failed");
  }
  return bytes;
}

// Appends the records of one batch file: `label_bytes` bytes before each image, the label
// the byte at `label_index` among them.
void read_batch(const std::string& path, int label_bytes, int label_index, std::int64_t num_classes, Records& out) {
  const std::vector<std::uint8_t> bytes = read_whole(path);
  const std::int64_t record = label_bytes + kImageBytes;
  const std::int64_t size = static_cast<std::int64_t>(bytes.size());
  if (size == 0) throw DataError(path + ": empty (expected records of " + std::to_string(record) + " bytes)");
  if (size % record != 0) {
    throw DataError(path + ": truncated: record " + std::to_string(size / record) + " (counting from 0) has " +
                    std::to_string(size % record) + " of its " + std::to_string(record) + " bytes");
  }
  const std::int64_t n = size / record;
  const std::size_t first = out.labels.size();
  out.labels.resize(first + static_cast<std::size_t>(n));
  out.images.resize((first + static_cast<std::size_t>(n)) * kImageBytes);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t* r = bytes.data() + i * record;
    const int label = r[label_index];
    if (label >= num_classes) {
      throw DataError(path + ": record " + std::to_string(i) + " has label " + std::to_string(label) +
                      ", out of range [0, " + std::to_string(num_classes) + ")");
    }
    out.labels[first + static_cast<std::size_t>(i)] = label;
    std::copy(r + label_bytes, r + record, out.images.begin() + static_cast<std::ptrdiff_t>((first + i) * kImageBytes));
  }
}

// One name a line, blank lines skipped (batches.meta.txt ends with one); `expected` names.
std::vector<std::string> class_names(const std::string& path, std::size_t expected,
                                     const std::vector<std::string>& fallback) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return fallback;
  std::ifstream in(path);
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (names.size() != expected) {
    throw DataError(path + ": " + std::to_string(names.size()) + " class names, expected " + std::to_string(expected));
  }
  return names;
}

std::vector<std::string> numbered(int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

void write(H5File& out, const std::string& split, const Records& r) {
  write_split(out, split, {3, 32, 32}, r.images, r.labels);
}

}  // namespace

ImportResult import_cifar(const std::string& kind, const std::string& source_dir, const std::string& output,
                          const std::string& labels) {
  if (kind != "cifar10" && kind != "cifar100") {
    throw UsageError("import: unknown data set kind \"" + kind + "\" (known: cifar10, cifar100)");
  }
  if (labels != "fine" && labels != "coarse") throw UsageError("import: --labels must be fine or coarse");
  struct stat st {};
  if (stat(source_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw DataError(source_dir + ": no such folder (the binary version of " + kind +
                    " from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked)");
  }
  const std::string dir = source_dir + "/";
  Records train, test;
  std::vector<std::string> classes;
  std::string name = kind;
  if (kind == "cifar10") {
    classes = class_names(dir + "batches.meta.txt", 10,
                          {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"});
    for (int b = 1; b <= 5; ++b) read_batch(dir + "data_batch_" + std::to_string(b) + ".bin", 1, 0, 10, train);
    read_batch(dir + "test_batch.bin", 1, 0, 10, test);
  } else {
    const bool fine = labels == "fine";
    const int n = fine ? 100 : 20;
    classes = class_names(dir + (fine ? "fine_label_names.txt" : "coarse_label_names.txt"), n, numbered(n));
    read_batch(dir + "train.bin", 2, fine ? 1 : 0, n, train);
    read_batch(dir + "test.bin", 2, fine ? 1 : 0, n, test);
    if (!fine) name += "-coarse";
  }
  ImportResult r;
  r.output = output;
  r.train_count = static_cast<std::int64_t>(train.labels.size());
  r.test_count = static_cast<std::int64_t>(test.labels.size());
  write_dataset_atomically(output, [&](H5File& out) {
    write_dataset_header(out, name, "binary batches from " + source_dir, classes);
    write(out, "train", train);
    write(out, "test", test);
  });
  return r;
}

}  // namespace hpctrain
