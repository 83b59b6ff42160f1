#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
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

namespace {

// A dataset of zeros, for layouts the writers refuse to produce.
void raw_dataset(H5File& f, const std::string& name, hid_t type, const std::vector<hsize_t>& dims) {
  const std::string group = name.substr(0, name.rfind('/'));
  if (!f.has(group)) H5Id g(H5Gcreate2(f.id(), group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  H5Id ds(H5Dcreate2(f.id(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
}

std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(i) - 1.5f;
  return v;
}

// Regression: 4 training and 2 test rows of 3 features.
void write_regression(const std::string& path) {
  H5File f = H5File::create(path);
  write_tabular_header(f, "table", "unit test", Task::Regression, {"a", "b", "c"}, {});
  const auto y_train = ramp(4, 2.0f), y_test = ramp(2, 3.0f);
  write_tabular_split(f, "train", 3, ramp(12, 0.5f), nullptr, &y_train);
  write_tabular_split(f, "test", 3, ramp(6, 0.25f), nullptr, &y_test);
}

}  // namespace

TEST(DatasetLayout, TabularRegressionRoundTrip) {
  TempFile t;
  write_regression(t.path);
  H5File f = H5File::open_read_serial(t.path);
  EXPECT_EQ(f.read_string_attr("/", "task"), "regression");
  EXPECT_FALSE(f.has_attr("/", "num_classes"));
  EXPECT_FALSE(f.has("/class_names"));
  const DatasetMeta m = read_dataset_meta(f);
  EXPECT_EQ(m.name, "table");
  EXPECT_EQ(m.task, Task::Regression);
  EXPECT_EQ(task_name(m.task), "regression");
  EXPECT_EQ(m.num_classes, 0);
  EXPECT_TRUE(m.class_names.empty());
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(m.float_inputs());
  EXPECT_EQ(m.inputs_path("test"), "/test/features");
  EXPECT_EQ(m.targets_path("train"), "/train/targets");
  EXPECT_EQ(m.sample_shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(m.sample_elements(), 3);
  EXPECT_EQ(m.sample_bytes(), 12);
  EXPECT_EQ(m.train.count, 4);
  EXPECT_EQ(m.test.count, 2);

  std::vector<float> x(12), y(4);
  read_rows(f, "/train/features", 0, 4, H5T_NATIVE_FLOAT, x.data());
  read_rows(f, "/train/targets", 0, 4, H5T_NATIVE_FLOAT, y.data());
  EXPECT_EQ(x, ramp(12, 0.5f));
  EXPECT_EQ(y, ramp(4, 2.0f));
  EXPECT_EQ(m.train.inputs_sha256, Sha256::hex(x.data(), x.size() * sizeof(float)));
  EXPECT_EQ(m.train.targets_sha256, Sha256::hex(y.data(), y.size() * sizeof(float)));
  const auto tx = ramp(6, 0.25f), ty = ramp(2, 3.0f);
  EXPECT_EQ(m.test.inputs_sha256, Sha256::hex(tx.data(), tx.size() * sizeof(float)));
  EXPECT_EQ(m.test.targets_sha256, Sha256::hex(ty.data(), ty.size() * sizeof(float)));
}

TEST(DatasetLayout, TabularClassificationRoundTrip) {
  TempFile t;
  const std::vector<std::int32_t> train_labels{0, 1, 1}, test_labels{1, 0};
  {
    H5File f = H5File::create(t.path);
    write_tabular_header(f, "table", "unit test", Task::Classification, {"only"}, {"no", "yes"});
    write_tabular_split(f, "train", 1, {1.0f, 2.0f, 3.0f}, &train_labels, nullptr);
    write_tabular_split(f, "test", 1, {4.0f, 5.0f}, &test_labels, nullptr);
  }
  H5File f = H5File::open_read_serial(t.path);
  const DatasetMeta m = read_dataset_meta(f);
  EXPECT_EQ(m.task, Task::Classification);
  EXPECT_EQ(m.num_classes, 2);
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"no", "yes"}));
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"only"}));
  EXPECT_EQ(m.inputs_name, "features");
  EXPECT_EQ(m.targets_name, "labels");
  EXPECT_EQ(m.sample_bytes(), 4);
  EXPECT_EQ(m.train.targets_sha256, Sha256::hex(train_labels.data(), 3 * sizeof(std::int32_t)));
  EXPECT_EQ(m.test.targets_sha256, Sha256::hex(test_labels.data(), 2 * sizeof(std::int32_t)));
}

TEST(DatasetLayout, ImageDataIsClassificationWithOrWithoutTaskAttribute) {
  TempFile t;
  write_small(t.path, 4, 2);
  {
    H5File f = H5File::open_read_serial(t.path);
    EXPECT_EQ(f.read_string_attr("/", "task"), "classification");
    const DatasetMeta m = read_dataset_meta(f);
    EXPECT_EQ(m.task, Task::Classification);
    EXPECT_FALSE(m.float_inputs());
    EXPECT_EQ(m.inputs_path("train"), "/train/images");
    EXPECT_EQ(m.sample_elements(), 32);
    EXPECT_EQ(m.sample_bytes(), 32);
  }
  {
    // Files written before the task attribute existed.
    H5Id file(H5Fopen(t.path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(H5Adelete(file, "task"), 0);
  }
  H5File f = H5File::open_read_serial(t.path);
  EXPECT_FALSE(f.has_attr("/", "task"));
  const DatasetMeta m = read_dataset_meta(f);
  EXPECT_EQ(m.task, Task::Classification);
  EXPECT_EQ(m.num_classes, 3);
}

// Builds a valid table of 2 + 2 rows of 3 features, lets `edit` damage it, and returns the
// reader's error ("" when it accepts the file).
template <class Edit>
std::string table_error(Task task, Edit edit) {
  TempFile t;
  {
    H5File f = H5File::create(t.path);
    const bool cls = task == Task::Classification;
    write_tabular_header(f, "table", "unit test", task, {"a", "b", "c"},
                         cls ? std::vector<std::string>{"x", "y"} : std::vector<std::string>{});
    const std::vector<float> y{0.5f, 1.5f};
    const std::vector<std::int32_t> labels{0, 1};
    for (const char* split : {"train", "test"}) {
      write_tabular_split(f, split, 3, ramp(6, 1.0f), cls ? &labels : nullptr, cls ? nullptr : &y);
    }
    edit(f);
  }
  return error_of(t.path);
}

void drop(H5File& f, const std::string& object) {
  ASSERT_GE(H5Ldelete(f.id(), object.c_str(), H5P_DEFAULT), 0);
}

void set_attr(H5File& f, const std::string& name, const std::string& value) {
  if (f.has_attr("/", name)) {
    ASSERT_GE(H5Adelete(f.id(), name.c_str()), 0);
  }
  f.write_string_attr("/", name, value);
}

TEST(DatasetLayout, TabularTaskAttributeIsChecked) {
  const auto none = [](H5File&) {};
  EXPECT_EQ(table_error(Task::Regression, none), "");
  EXPECT_EQ(table_error(Task::Classification, none), "");
  std::string e = table_error(Task::Regression, [](H5File& f) { set_attr(f, "task", "ranking"); });
  EXPECT_NE(e.find(": root attribute task=\"ranking\", expected \"classification\" or \"regression\""),
            std::string::npos)
      << e;
  // Without the attribute a file is classification, which needs num_classes and labels.
  e = table_error(Task::Regression, [](H5File& f) { ASSERT_GE(H5Adelete(f.id(), "task"), 0); });
  EXPECT_NE(e.find(": attribute /@num_classes is missing (required for task \"classification\")"), std::string::npos)
      << e;
  e = table_error(Task::Classification, [](H5File& f) { set_attr(f, "task", "regression"); });
  EXPECT_NE(e.find(": dataset /train/targets is missing"), std::string::npos) << e;
  e = table_error(Task::Classification, [](H5File& f) {
    ASSERT_GE(H5Adelete(f.id(), "num_classes"), 0);
    f.write_int_attr("/", "num_classes", 1);
  });
  EXPECT_NE(e.find(": num_classes is 1, expected >= 2"), std::string::npos) << e;
}

TEST(DatasetLayout, TabularMissingDatasetsAreNamed) {
  std::string e = table_error(Task::Regression, [](H5File& f) { drop(f, "/test/features"); });
  EXPECT_NE(e.find(": dataset /test/features is missing"), std::string::npos) << e;
  e = table_error(Task::Regression, [](H5File& f) { drop(f, "/train/targets"); });
  EXPECT_NE(e.find(": dataset /train/targets is missing"), std::string::npos) << e;
  e = table_error(Task::Classification, [](H5File& f) { drop(f, "/test/labels"); });
  EXPECT_NE(e.find(": dataset /test/labels is missing"), std::string::npos) << e;
  e = table_error(Task::Regression, [](H5File& f) { drop(f, "/train/features"); });
  EXPECT_NE(e.find(": dataset /train/images (image data) or /train/features (tabular data) is missing"),
            std::string::npos)
      << e;
  e = table_error(Task::Regression, [](H5File& f) { raw_dataset(f, "/test/images", H5T_STD_U8LE, {2, 1, 1, 3}); });
  EXPECT_NE(e.find(": has both /test/images and /test/features"), std::string::npos) << e;
  // /feature_names is optional, but when present it names every feature.
  EXPECT_EQ(table_error(Task::Regression, [](H5File& f) { drop(f, "/feature_names"); }), "");
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/feature_names");
    f.write_string_list("/feature_names", {"a", "b"});
  });
  EXPECT_NE(e.find(": /feature_names has 2 names for 3 features"), std::string::npos) << e;
}

TEST(DatasetLayout, TabularWrongTypesAndShapesAreNamed) {
  std::string e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/train/features");
    raw_dataset(f, "/train/features", H5T_IEEE_F64LE, {2, 3});
  });
  EXPECT_NE(e.find(": /train/features: expected float32 [N, F] or [N, V, T], found float64 [2, 3]"), std::string::npos)
      << e;
  // Series windows [N, V, T] are features too; a fourth dimension is not.
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/train/features");
    raw_dataset(f, "/train/features", H5T_IEEE_F32LE, {2, 3, 1, 1});
  });
  EXPECT_NE(e.find(": /train/features: expected float32 [N, F] or [N, V, T], found float32 [2, 3, 1, 1]"),
            std::string::npos)
      << e;
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/test/targets");
    raw_dataset(f, "/test/targets", H5T_STD_I32LE, {2});
  });
  EXPECT_NE(e.find(": /test/targets: expected float32 [N] or [N, S], found int32 with 1 dimensions"), std::string::npos)
      << e;
  // Several target values per sample ([N, S]) must agree between the splits; three
  // dimensions are never targets.
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/train/targets");
    raw_dataset(f, "/train/targets", H5T_IEEE_F32LE, {2, 3});
  });
  EXPECT_NE(e.find(": /test/targets: 1 target values per sample, but /train/targets has 3"), std::string::npos) << e;
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/test/targets");
    raw_dataset(f, "/test/targets", H5T_IEEE_F32LE, {2, 3, 1});
  });
  EXPECT_NE(e.find(": /test/targets: expected float32 [N] or [N, S], found float32 with 3 dimensions"),
            std::string::npos)
      << e;
  e = table_error(Task::Classification, [](H5File& f) {
    drop(f, "/train/labels");
    raw_dataset(f, "/train/labels", H5T_IEEE_F32LE, {2});
  });
  EXPECT_NE(e.find(": /train/labels: expected int32 [N], found float32 with 1 dimensions"), std::string::npos) << e;
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/train/targets");
    raw_dataset(f, "/train/targets", H5T_IEEE_F32LE, {3});
  });
  EXPECT_NE(e.find(": /train/targets has 3 rows but /train/features has 2"), std::string::npos) << e;
  e = table_error(Task::Regression, [](H5File& f) {
    drop(f, "/test/features");
    raw_dataset(f, "/test/features", H5T_IEEE_F32LE, {2, 4});
  });
  EXPECT_NE(e.find(": /test/features: sample shape differs from /train/features"), std::string::npos) << e;
}

TEST(DatasetLayout, TabularWriterRejectsInconsistentInput) {
  TempFile t;
  H5File f = H5File::create(t.path);
  EXPECT_THROW(write_tabular_header(f, "t", "unit test", Task::Classification, {"a"}, {"only"}), DataError);
  const std::vector<float> y{1.0f, 2.0f};
  const std::vector<std::int32_t> labels{0, 1};
  EXPECT_THROW(write_tabular_split(f, "train", 1, {1.0f, 2.0f}, nullptr, nullptr), DataError);
  EXPECT_THROW(write_tabular_split(f, "train", 1, {1.0f, 2.0f}, &labels, &y), DataError);
  EXPECT_THROW(write_tabular_split(f, "train", 2, {1.0f, 2.0f, 3.0f}, nullptr, &y), DataError);
}
