// CSV import: quoting, line endings, the seeded test split, class names, the stored
// layout and hashes, and errors that name the file, row and column.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "data/CsvImporter.hpp"
#include "data/DatasetLayout.hpp"
#include "data/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"

using namespace hpctrain;

namespace {

struct Files {
  std::string dir = "/tmp/hpctrain_csv_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  Files() { std::system(("mkdir -p " + dir).c_str()); }
  ~Files() { std::system(("rm -rf " + dir).c_str()); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
    return dir + "/" + name;
  }
  static inline int counter = 0;
};

std::string import_error(const CsvImportOptions& o) {
  try {
    import_csv(o);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(CsvImporter, RegressionRoundTripWithQuotesAndCrlf) {
  Files f;
  std::string text = "\"size, m2\",rooms,price\r\n";
  for (int i = 0; i < 10; ++i) {
    text += "\"" + std::to_string(50 + i) + "\", " + std::to_string(i % 4) + " ," + std::to_string(100 * i) + ".5\r\n";
  }
  text += "\r\n\r\n";
  CsvImportOptions o;
  o.path = f.write("houses.csv", text);
  o.label = "price";
  o.test_fraction = 0.3;
  o.output = f.dir + "/houses.h5";
  const ImportResult r = import_csv(o);
  EXPECT_EQ(r.train_count, 7);
  EXPECT_EQ(r.test_count, 3);
  H5File h = H5File::open_read_serial(o.output);
  const DatasetMeta m = read_dataset_meta(h);
  EXPECT_EQ(m.task, Task::Regression);
  EXPECT_EQ(m.num_classes, 0);
  EXPECT_EQ(m.inputs_name, "features");
  EXPECT_EQ(m.targets_name, "targets");
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"size, m2", "rooms"}));
  EXPECT_EQ(m.sample_shape, (std::vector<std::int64_t>{2}));
  EXPECT_EQ(m.train.count + m.test.count, 10);
  std::vector<float> x(static_cast<std::size_t>(m.train.count * 2)), y(static_cast<std::size_t>(m.train.count));
  read_rows(h, "/train/features", 0, m.train.count, H5T_NATIVE_FLOAT, x.data());
  read_rows(h, "/train/targets", 0, m.train.count, H5T_NATIVE_FLOAT, y.data());
  for (std::int64_t i = 0; i < m.train.count; ++i) {
    // Rows keep their file order; each row's values stay together.
    const int row = static_cast<int>(x[static_cast<std::size_t>(2 * i)]) - 50;
    EXPECT_EQ(x[static_cast<std::size_t>(2 * i + 1)], static_cast<float>(row % 4));
    EXPECT_EQ(y[static_cast<std::size_t>(i)], 100.0f * static_cast<float>(row) + 0.5f);
    if (i > 0) {
      EXPECT_GT(x[static_cast<std::size_t>(2 * i)], x[static_cast<std::size_t>(2 * i - 2)]);
    }
  }
  EXPECT_EQ(m.train.inputs_sha256, Sha256::hex(x.data(), x.size() * sizeof(float)));
  EXPECT_EQ(m.train.targets_sha256, Sha256::hex(y.data(), y.size() * sizeof(float)));
  // The split is a function of the seed.
  o.output = f.dir + "/again.h5";
  import_csv(o);
  H5File h2 = H5File::open_read_serial(o.output);
  EXPECT_EQ(read_dataset_meta(h2).test.inputs_sha256, m.test.inputs_sha256);
  o.seed = 99;
  o.output = f.dir + "/other.h5";
  import_csv(o);
  H5File h3 = H5File::open_read_serial(o.output);
  EXPECT_NE(read_dataset_meta(h3).test.inputs_sha256, m.test.inputs_sha256);
}

TEST(CsvImporter, ClassificationNamesClassesInSortedOrder) {
  Files f;
  std::string text = "a,b,kind\n";
  const char* kinds[] = {"pear", "apple", "fig"};
  for (int i = 0; i < 12; ++i) text += std::to_string(i) + "," + std::to_string(-i) + "," + kinds[i % 3] + "\n";
  CsvImportOptions o;
  o.path = f.write("fruit.csv", text);
  o.test_path = f.write("fruit_test.csv", "a,b,kind\n1,2,fig\n3,4,pear\n");
  o.label = "kind";
  o.task = "classification";
  o.output = f.dir + "/fruit.h5";
  const ImportResult r = import_csv(o);
  EXPECT_EQ(r.train_count, 12);
  EXPECT_EQ(r.test_count, 2);
  H5File h = H5File::open_read_serial(o.output);
  const DatasetMeta m = read_dataset_meta(h);
  EXPECT_EQ(m.task, Task::Classification);
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"apple", "fig", "pear"}));
  std::vector<std::int32_t> y(2);
  read_rows(h, "/test/labels", 0, 2, H5T_NATIVE_INT32, y.data());
  EXPECT_EQ(y, (std::vector<std::int32_t>{1, 2}));
}

TEST(CsvImporter, ErrorsNameFileRowAndColumn) {
  Files f;
  CsvImportOptions o;
  o.label = "y";
  o.output = f.dir + "/out.h5";
  o.path = f.write("bad.csv", "x1,x2,y\n1,2,3\n4,oops,6\n7,8,9\n1,1,1\n");
  std::string e = import_error(o);
  EXPECT_NE(e.find("bad.csv: row 3, column \"x2\": \"oops\" is not a finite number"), std::string::npos) << e;
  o.path = f.write("short.csv", "x1,x2,y\n1,2,3\n4,5\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 3 has 2 cells, the header has 3"), std::string::npos) << e;
  o.path = f.write("nolabel.csv", "x1,x2\n1,2\n");
  e = import_error(o);
  EXPECT_NE(e.find("no label column \"y\" (columns: x1, x2)"), std::string::npos) << e;
  o.path = f.write("empty.csv", "");
  EXPECT_NE(import_error(o).find("empty file"), std::string::npos);
  o.path = f.write("inf.csv", "x1,y\ninf,1\n2,2\n3,3\n4,4\n");
  EXPECT_NE(import_error(o).find("row 2, column \"x1\""), std::string::npos);
  o.path = f.write("one_class.csv", "x1,y\n1,a\n2,a\n3,a\n4,a\n5,a\n");
  o.task = "classification";
  EXPECT_NE(import_error(o).find("needs at least 2"), std::string::npos);
  std::FILE* out = std::fopen(o.output.c_str(), "r");
  EXPECT_EQ(out, nullptr) << "nothing written on failure";
  if (out) std::fclose(out);
}
