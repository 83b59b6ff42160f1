#pragma once
// CSV tables into the canonical HDF5 layout (docs/data-format.md, "Tabular data"): every
// column but the label is a numeric feature; the label is a number (regression) or a
// class name (classification).
#include <cstdint>
#include <string>
#include <vector>

#include "io/Importer.hpp"

namespace hpctrain {

struct CsvImportOptions {
  std::string path;                 // CSV file with a header row
  std::string label;                // label column name
  std::string task = "regression";  // or "classification"
  std::string test_path;            // optional separate test CSV (same header); else a split:
  double test_fraction = 0.2;       // share of rows held out as test, by a seeded permutation
  std::uint64_t seed = 0;
  std::string output;  // HDF5 file
  std::string name;    // data-set name attribute (default: the file's stem)
};

// Throws DataError naming the file, the row (its line number) and the column of a bad
// cell. Writes atomically (temporary file, then rename).
ImportResult import_csv(const CsvImportOptions& options);

// Every column but those in `drop` as numbers (a time series: one row per step), row-major
// [rows, names.size()]. DataError names the row and column of a bad cell, and a `drop`
// column that is not there.
struct NumericColumns {
  std::vector<std::string> names;
  std::vector<float> values;
  std::int64_t rows = 0;
};
NumericColumns read_numeric_csv(const std::string& path, const std::vector<std::string>& drop);

}  // namespace hpctrain
