#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "data/DatasetLayout.hpp"
#include "data/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"

using namespace hpctrain;

namespace {

struct TempFile {
  std::string path = "/tmp/hpctrain_layout_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ".h5";
  ~TempFile() { std::remove(path.c_str()); }
  static inline int counter = 0;
};

void write_small(const std::string& path, std::int64_t n_train, std::int64_t n_test) {
  H5File f = H5File::create(path);
  write_dataset_header(f, "tiny", "unit test", {"a", "b", "c"});
  for (auto [split, n] : {std::pair<std::string, std::int64_t>{"train", n_train}, {"test", n_test}}) {
    std::vector<std::uint8_t> images(static_cast<std::size_t>(n * 2 * 4 * 4));
    for (std::size_t i = 0; i < images.size(); ++i) images[i] = static_cast<std::uint8_t>(i * 31);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) labels[i] = static_cast<std::int32_t>(i % 3);
    write_split(f, split, {2, 4, 4}, images, labels);
  }
}

std::string error_of(const std::string& path) {
  try {
    H5File f = H5File::open_read_serial(path);
    read_dataset_meta(f);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DatasetLayout, RoundTripMetadataRowsAndHashes) {
  TempFile t;
  write_small(t.path, 50, 20);
  H5File f = H5File::open_read_serial(t.path);
  const DatasetMeta m = read_dataset_meta(f);
  EXPECT_EQ(m.name, "tiny");
  EXPECT_EQ(m.num_classes, 3);
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(m.sample_shape, (std::vector<std::int64_t>{2, 4, 4}));
  EXPECT_EQ(m.train.count, 50);
  EXPECT_EQ(m.test.count, 20);

  std::vector<std::uint8_t> rows(static_cast<std::size_t>(5 * 32));
  read_rows(f, "/train/images", 10, 5, H5T_NATIVE_UINT8, rows.data());
  for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i], static_cast<std::uint8_t>((10 * 32 + i) * 31));

  std::vector<std::uint8_t> all(50 * 32);
  read_rows(f, "/train/images", 0, 50, H5T_NATIVE_UINT8, all.data());
  EXPECT_EQ(m.train.inputs_sha256, Sha256::hex(all.data(), all.size()));
  std::vector<std::int32_t> labels(50);
  read_rows(f, "/train/labels", 0, 50, H5T_NATIVE_INT32, labels.data());
  EXPECT_EQ(m.train.targets_sha256, Sha256::hex(labels.data(), labels.size() * 4));
  EXPECT_THROW(read_rows(f, "/train/images", 45, 10, H5T_NATIVE_UINT8, rows.data()), DataError);
}

TEST(DatasetLayout, ChunksHoldWholeSamples) {
  EXPECT_EQ(chunk_rows(784, 60000), 1337);  // 1 MiB / 784 bytes
  EXPECT_EQ(chunk_rows(784, 10), 10);
  EXPECT_EQ(chunk_rows(4 << 20, 100), 1);
}

TEST(DatasetLayout, MissingFileAndNonHdf5AreNamed) {
  EXPECT_NE(error_of("/nonexistent/data.h5").find("/nonexistent/data.h5: no such file"), std::string::npos);
  TempFile t;
  FILE* f = std::fopen(t.path.c_str(), "w");
  std::fputs("not hdf5 at all", f);
  std::fclose(f);
  EXPECT_NE(error_of(t.path).find("not an HDF5 file"), std::string::npos);
}

TEST(DatasetLayout, MissingDatasetAndWrongDtypeAreNamed) {
  TempFile t;
  {
    H5File f = H5File::create(t.path);
    write_dataset_header(f, "broken", "unit test", {"a", "b"});
    std::vector<std::uint8_t> images(4 * 1 * 2 * 2, 0);
    write_split(f, "train", {1, 2, 2}, images, {0, 1, 0, 1});
  }
  const auto missing = error_of(t.path);
  EXPECT_NE(missing.find("/test/images is missing"), std::string::npos) << missing;

  TempFile u;
  {
    H5File f = H5File::create(u.path);
    write_dataset_header(f, "broken", "unit test", {"a", "b"});
    std::vector<std::uint8_t> images(4 * 4, 0);
    write_split(f, "test", {1, 2, 2}, images, {0, 1, 0, 1});
    H5Id g(H5Gcreate2(f.id(), "/train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hsize_t dims[2] = {4, 4};
    H5Id space(H5Screate_simple(2, dims, nullptr));
    H5Id ds(H5Dcreate2(f.id(), "/train/images", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hsize_t ldims[1] = {4};
    H5Id lspace(H5Screate_simple(1, ldims, nullptr));
    H5Id ls(H5Dcreate2(f.id(), "/train/labels", H5T_STD_I32LE, lspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  }
  const auto wrong = error_of(u.path);
  EXPECT_NE(wrong.find("/train/images: expected uint8 [N, C, H, W], found float32 [4, 4]"), std::string::npos) << wrong;
}

TEST(DatasetLayout, ForeignHdf5FileIsRejected) {
  TempFile t;
  {
    H5File f = H5File::create(t.path);
    f.write_int_attr("/", "something", 1);
  }
  EXPECT_NE(error_of(t.path).find("not an hpctrain data set"), std::string::npos);
}
