// CSV import: quoting, line endings, the seeded test split, class names, the stored
// layout and hashes, and errors that name the file, row and column.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "io/CsvImporter.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
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

bool exists(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f) std::fclose(f);
  return f != nullptr;
}

std::string import_error(const CsvImportOptions& o) {
  try {
    import_csv(o);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

std::vector<float> read_floats(const H5File& h, const std::string& name, std::int64_t elements) {
  std::vector<float> v(static_cast<std::size_t>(elements));
  const DatasetInfo info = dataset_info(h, name);
  read_rows(h, name, 0, info.shape[0], H5T_NATIVE_FLOAT, v.data());
  return v;
}

std::vector<std::int32_t> read_ints(const H5File& h, const std::string& name, std::int64_t rows) {
  std::vector<std::int32_t> v(static_cast<std::size_t>(rows));
  read_rows(h, name, 0, rows, H5T_NATIVE_INT32, v.data());
  return v;
}

// x = row number (0-based), y = 10 * x + 0.25: each row identifies itself.
std::string numbered_table(int rows) {
  std::string text = "x,y\n";
  for (int i = 0; i < rows; ++i) text += std::to_string(i) + "," + std::to_string(10 * i) + ".25\n";
  return text;
}

std::vector<float> test_rows_of(const CsvImportOptions& o) {
  import_csv(o);
  H5File h = H5File::open_read_serial(o.output);
  const DatasetMeta m = read_dataset_meta(h);
  return read_floats(h, "/test/features", m.test.count);
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
  EXPECT_EQ(r.output, o.output);
  EXPECT_EQ(r.train_count, 7);
  EXPECT_EQ(r.test_count, 3);
  EXPECT_FALSE(exists(o.output + ".tmp"));
  H5File h = H5File::open_read_serial(o.output);
  const DatasetMeta m = read_dataset_meta(h);
  EXPECT_EQ(m.name, "houses");
  EXPECT_EQ(m.source, "csv " + o.path + " (label price)");
  EXPECT_EQ(m.task, Task::Regression);
  EXPECT_EQ(h.read_string_attr("/", "task"), "regression");
  EXPECT_FALSE(h.has_attr("/", "num_classes"));
  EXPECT_FALSE(h.has("/class_names"));
  EXPECT_EQ(m.num_classes, 0);
  EXPECT_EQ(m.inputs_name, "features");
  EXPECT_EQ(m.targets_name, "targets");
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"size, m2", "rooms"}));
  EXPECT_EQ(m.sample_shape, (std::vector<std::int64_t>{2}));
  EXPECT_EQ(m.sample_bytes(), 8);
  EXPECT_EQ(m.train.count, 7);
  EXPECT_EQ(m.test.count, 3);
  std::set<int> seen;
  for (const char* split : {"train", "test"}) {
    const std::int64_t n = std::string(split) == "train" ? m.train.count : m.test.count;
    const std::vector<float> x = read_floats(h, m.inputs_path(split), 2 * n);
    const std::vector<float> y = read_floats(h, m.targets_path(split), n);
    for (std::int64_t i = 0; i < n; ++i) {
      // Rows keep their file order; each row's values stay together.
      const int row = static_cast<int>(x[static_cast<std::size_t>(2 * i)]) - 50;
      EXPECT_TRUE(seen.insert(row).second) << "row " << row << " stored twice";
      EXPECT_EQ(x[static_cast<std::size_t>(2 * i + 1)], static_cast<float>(row % 4));
      EXPECT_EQ(y[static_cast<std::size_t>(i)], 100.0f * static_cast<float>(row) + 0.5f);
      if (i > 0) {
        EXPECT_GT(x[static_cast<std::size_t>(2 * i)], x[static_cast<std::size_t>(2 * i - 2)]);
      }
    }
    const SplitMeta& s = std::string(split) == "train" ? m.train : m.test;
    EXPECT_EQ(s.inputs_sha256, Sha256::hex(x.data(), x.size() * sizeof(float)));
    EXPECT_EQ(s.targets_sha256, Sha256::hex(y.data(), y.size() * sizeof(float)));
  }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(CsvImporter, ClassificationRoundTripNamesClassesInSortedOrder) {
  Files f;
  std::string text = "a,b,kind\n";
  const char* kinds[] = {"pear", "apple", "fig"};
  for (int i = 0; i < 12; ++i) text += std::to_string(i) + "," + std::to_string(-i) + "," + kinds[i % 3] + "\n";
  CsvImportOptions o;
  o.path = f.write("fruit.csv", text);
  o.test_path = f.write("fruit_test.csv", "a,b,kind\n1.5,2,fig\n3,-4e-1, pear \n");
  o.label = "kind";
  o.task = "classification";
  o.name = "orchard";
  o.output = f.dir + "/fruit.h5";
  const ImportResult r = import_csv(o);
  EXPECT_EQ(r.train_count, 12);
  EXPECT_EQ(r.test_count, 2);
  H5File h = H5File::open_read_serial(o.output);
  const DatasetMeta m = read_dataset_meta(h);
  EXPECT_EQ(m.name, "orchard");
  EXPECT_EQ(m.task, Task::Classification);
  EXPECT_EQ(m.num_classes, 3);
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"apple", "fig", "pear"}));
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.targets_name, "labels");

  const std::vector<float> x = read_floats(h, "/train/features", 24);
  const std::vector<std::int32_t> y = read_ints(h, "/train/labels", 12);
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(x[static_cast<std::size_t>(2 * i)], static_cast<float>(i));
    EXPECT_EQ(x[static_cast<std::size_t>(2 * i + 1)], static_cast<float>(-i));
    EXPECT_EQ(y[static_cast<std::size_t>(i)], (std::vector<std::int32_t>{2, 0, 1})[static_cast<std::size_t>(i % 3)]);
  }
  EXPECT_EQ(m.train.inputs_sha256, Sha256::hex(x.data(), x.size() * sizeof(float)));
  EXPECT_EQ(m.train.targets_sha256, Sha256::hex(y.data(), y.size() * sizeof(std::int32_t)));

  const std::vector<float> tx = read_floats(h, "/test/features", 4);
  const std::vector<std::int32_t> ty = read_ints(h, "/test/labels", 2);
  EXPECT_EQ(tx, (std::vector<float>{1.5f, 2.0f, 3.0f, -0.4f}));
  EXPECT_EQ(ty, (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(m.test.inputs_sha256, Sha256::hex(tx.data(), tx.size() * sizeof(float)));
  EXPECT_EQ(m.test.targets_sha256, Sha256::hex(ty.data(), ty.size() * sizeof(std::int32_t)));
}

TEST(CsvImporter, TestFractionSplitIsSeededAndRounded) {
  Files f;
  CsvImportOptions o;
  o.path = f.write("n.csv", numbered_table(10));
  o.label = "y";
  o.test_fraction = 0.25;  // 2.5 rows: rounded half away from zero
  o.output = f.dir + "/a.h5";
  const ImportResult r = import_csv(o);
  EXPECT_EQ(r.train_count, 7);
  EXPECT_EQ(r.test_count, 3);

  H5File h = H5File::open_read_serial(o.output);
  const std::vector<float> train = read_floats(h, "/train/features", 7);
  const std::vector<float> test = read_floats(h, "/test/features", 3);
  std::set<float> all(train.begin(), train.end());
  all.insert(test.begin(), test.end());
  EXPECT_EQ(all.size(), 10u) << "the splits are disjoint and cover every row";
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_TRUE(std::is_sorted(test.begin(), test.end()));

  o.output = f.dir + "/b.h5";
  EXPECT_EQ(test_rows_of(o), test) << "the same seed gives the same split";
  bool differs = false;
  for (std::uint64_t seed = 1; seed <= 5 && !differs; ++seed) {
    o.seed = seed;
    o.output = f.dir + "/seed" + std::to_string(seed) + ".h5";
    differs = test_rows_of(o) != test;
  }
  EXPECT_TRUE(differs) << "another seed gives another split";

  o.seed = 0;
  o.test_fraction = 0.5;
  o.output = f.dir + "/half.h5";
  EXPECT_EQ(import_csv(o).test_count, 5);
}

TEST(CsvImporter, QuotedFieldsMayHoldCommasQuotesAndLineBreaks) {
  Files f;
  // A byte order mark, a quoted header, "" for a quote, a line break inside a class name,
  // spaces around a quoted number, a lone CR as a line end and no final line break.
  const std::string text =
      "\xEF\xBB\xBF\"x\",label\n"
      "1,\"say \"\"hi\"\"\"\n"
      " \"2\" ,\"two\nlines\"\r"
      "3,\"a,b\"\n"
      "4,\"say \"\"hi\"\"\"";
  CsvImportOptions o;
  o.path = f.write("quoted.csv", text);
  o.test_path = f.write("quoted_test.csv", "x,label\n5,\"a,b\"\n6,\"two\nlines\"\n");
  o.label = "label";
  o.task = "classification";
  o.output = f.dir + "/quoted.h5";
  const ImportResult r = import_csv(o);
  EXPECT_EQ(r.train_count, 4);
  EXPECT_EQ(r.test_count, 2);
  H5File h = H5File::open_read_serial(o.output);
  const DatasetMeta m = read_dataset_meta(h);
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"x"}));
  EXPECT_EQ(m.class_names, (std::vector<std::string>{"a,b", "say \"hi\"", "two\nlines"}));
  EXPECT_EQ(read_floats(h, "/train/features", 4), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(read_ints(h, "/train/labels", 4), (std::vector<std::int32_t>{1, 2, 0, 1}));
  EXPECT_EQ(read_ints(h, "/test/labels", 2), (std::vector<std::int32_t>{0, 2}));

  // Rows are numbered by the line they start on, counting the line break inside quotes.
  o.test_path = f.write("bad_test.csv", "x,label\n5,\"multi\nline\"\nfive,b\n");
  const std::string e = import_error(o);
  EXPECT_NE(e.find("bad_test.csv: row 4, column \"x\": \"five\" is not a number"), std::string::npos) << e;
}

TEST(CsvImporter, BadCellsNameFileRowAndColumn) {
  Files f;
  CsvImportOptions o;
  o.label = "y";
  o.output = f.dir + "/out.h5";
  o.path = f.write("bad.csv", "x1,x2,y\n1,2,3\n\n4,oops,6\n7,8,9\n1,1,1\n");
  std::string e = import_error(o);
  EXPECT_NE(e.find("bad.csv: row 4, column \"x2\": \"oops\" is not a number"), std::string::npos) << e;
  o.path = f.write("label.csv", "x1,y\n1,2\n2,3\n3,4\n4,1O\n");
  e = import_error(o);
  EXPECT_NE(e.find("label.csv: row 5, column \"y\": \"1O\" is not a number"), std::string::npos) << e;
  o.path = f.write("partial.csv", "x1,y\n1,2\n2 3,3\n3,4\n4,1\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 3, column \"x1\": \"2 3\" is not a number"), std::string::npos) << e;
  o.path = f.write("inf.csv", "x1,y\ninf,1\n2,2\n3,3\n4,4\n");
  e = import_error(o);
  EXPECT_NE(e.find("inf.csv: row 2, column \"x1\": \"inf\" is not a finite number"), std::string::npos) << e;
  o.path = f.write("nan.csv", "x1,y\n1,1\n2,NaN\n3,3\n4,4\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 3, column \"y\": \"NaN\" is not a finite number"), std::string::npos) << e;
  o.path = f.write("big.csv", "x1,y\n1,1\n2,2\n1e39,3\n4,4\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 4, column \"x1\": \"1e39\" is out of range for float32"), std::string::npos) << e;
  o.path = f.write("huge.csv", "x1,y\n1,1\n2,2\n3,3\n4,-1e999\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 5, column \"y\": \"-1e999\" is out of range for float32"), std::string::npos) << e;
  o.path = f.write("empty_cell.csv", "x1,x2,y\n1,2,3\n4, ,6\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 3, column \"x2\": empty cell, expected a number"), std::string::npos) << e;
  o.path = f.write("after_quote.csv", "x1,y\n1,2\n\"3\"4,5\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 3, column \"x1\": text after the closing quote"), std::string::npos) << e;
  o.path = f.write("open_quote.csv", "x1,y\n1,2\n3,\"4\n5,6\n");
  e = import_error(o);
  EXPECT_NE(e.find("row 3, column \"y\": a quoted field is never closed"), std::string::npos) << e;
  o.path = f.write("short.csv", "x1,x2,y\n1,2,3\n4,5\n");
  e = import_error(o);
  EXPECT_NE(e.find("short.csv: row 3 has 2 cells, the header has 3"), std::string::npos) << e;
  o.path = f.write("long.csv", "x1,x2,y\r\n1,2,3\r\n4,5,6,\r\n");
  e = import_error(o);
  EXPECT_NE(e.find("long.csv: row 3 has 4 cells, the header has 3"), std::string::npos) << e;
  o.task = "classification";
  o.path = f.write("no_class.csv", "x1,y\n1,a\n2,\n3,b\n4,b\n");
  e = import_error(o);
  EXPECT_NE(e.find("no_class.csv: row 3, column \"y\": empty class label"), std::string::npos) << e;
  EXPECT_FALSE(exists(o.output)) << "nothing written on failure";
  EXPECT_FALSE(exists(o.output + ".tmp"));
}

TEST(CsvImporter, TableErrorsNameTheFile) {
  Files f;
  CsvImportOptions o;
  o.label = "y";
  o.output = f.dir + "/out.h5";
  o.path = f.write("nolabel.csv", "x1,x2\n1,2\n");
  std::string e = import_error(o);
  EXPECT_NE(e.find("nolabel.csv: no label column \"y\" (columns: x1, x2)"), std::string::npos) << e;
  o.path = f.write("empty.csv", "");
  e = import_error(o);
  EXPECT_NE(e.find("empty.csv: empty file"), std::string::npos) << e;
  o.path = f.write("blank.csv", "\n  \r\n\n");
  e = import_error(o);
  EXPECT_NE(e.find("blank.csv: empty file"), std::string::npos) << e;
  o.path = f.dir + "/absent.csv";
  e = import_error(o);
  EXPECT_NE(e.find("absent.csv: cannot open"), std::string::npos) << e;
  o.path = f.write("label_only.csv", "y\n1\n2\n3\n");
  e = import_error(o);
  EXPECT_NE(e.find("label_only.csv: no feature columns besides the label \"y\""), std::string::npos) << e;
  o.path = f.write("twice.csv", "x,x,y\n1,2,3\n");
  e = import_error(o);
  EXPECT_NE(e.find("twice.csv: the header names column \"x\" twice"), std::string::npos) << e;
  o.path = f.write("unnamed.csv", "x,,y\n1,2,3\n");
  e = import_error(o);
  EXPECT_NE(e.find("unnamed.csv: the header has an empty column name"), std::string::npos) << e;

  // Fewer than 2 rows on either side of the split.
  o.path = f.write("three.csv", numbered_table(3));
  e = import_error(o);
  EXPECT_NE(e.find("three.csv: 3 data rows split into 2 training and 1 test rows (test fraction 0.2)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("each split needs at least 2"), std::string::npos) << e;
  o.test_fraction = 0.8;
  e = import_error(o);
  EXPECT_NE(e.find("1 training and 2 test rows"), std::string::npos) << e;
  o.path = f.write("header_only.csv", "x,y\n");
  e = import_error(o);
  EXPECT_NE(e.find("0 data rows split into 0 training and 0 test rows"), std::string::npos) << e;

  // A separate test file.
  o.path = f.write("train.csv", numbered_table(4));
  o.test_path = f.write("renamed.csv", "x,Y\n1,2\n3,4\n");
  e = import_error(o);
  EXPECT_NE(e.find("renamed.csv: the header differs from " + o.path + "'s: column 2 is \"Y\", expected \"y\""),
            std::string::npos)
      << e;
  o.test_path = f.write("narrow.csv", "x\n1\n3\n");
  e = import_error(o);
  EXPECT_NE(e.find("column 2 is nothing, expected \"y\""), std::string::npos) << e;
  o.test_path = f.write("one_row.csv", "x,y\n1,2\n");
  e = import_error(o);
  EXPECT_NE(e.find("one_row.csv: 1 data rows; the test split needs at least 2"), std::string::npos) << e;
  o.path = f.write("one_train_row.csv", numbered_table(1));
  o.test_path = f.write("test.csv", numbered_table(4));
  e = import_error(o);
  EXPECT_NE(e.find("one_train_row.csv: 1 data rows; the training split needs at least 2"), std::string::npos) << e;
  o.test_path.clear();

  o.path = f.write("one_class.csv", "x1,y\n1,a\n2,a\n3,a\n4,a\n5,a\n");
  o.task = "classification";
  o.test_fraction = 0.4;
  e = import_error(o);
  EXPECT_NE(e.find("one_class.csv: column \"y\" has 1 distinct class label(s); classification needs at least 2"),
            std::string::npos)
      << e;
  EXPECT_FALSE(exists(o.output)) << "nothing written on failure";
  EXPECT_FALSE(exists(o.output + ".tmp"));
}

TEST(CsvImporter, FailureKeepsAnEarlierOutput) {
  Files f;
  CsvImportOptions o;
  o.path = f.write("good.csv", numbered_table(10));
  o.label = "y";
  o.output = f.dir + "/data.h5";
  import_csv(o);
  H5File before = H5File::open_read_serial(o.output);
  const std::string hash = read_dataset_meta(before).train.inputs_sha256;
  o.path = f.write("bad.csv", "x,y\n1,2\n3,x\n");
  EXPECT_THROW(import_csv(o), DataError);
  H5File after = H5File::open_read_serial(o.output);
  EXPECT_EQ(read_dataset_meta(after).train.inputs_sha256, hash);
  EXPECT_FALSE(exists(o.output + ".tmp"));
}

TEST(CsvImporter, BadOptionsAreUsageErrors) {
  Files f;
  CsvImportOptions o;
  o.path = f.write("n.csv", numbered_table(10));
  o.label = "y";
  o.output = f.dir + "/n.h5";
  o.task = "ranking";
  EXPECT_THROW(import_csv(o), UsageError);
  o.task = "regression";
  for (double fraction : {0.0, 1.0, -0.5, 2.0}) {
    o.test_fraction = fraction;
    EXPECT_THROW(import_csv(o), UsageError) << fraction;
  }
  o.test_fraction = 0.2;
  o.label.clear();
  EXPECT_THROW(import_csv(o), UsageError);
  EXPECT_FALSE(exists(o.output));
}
