#include "data/CsvImporter.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "data/DatasetLayout.hpp"
#include "data/Sampling.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::int64_t> lines;  // line number of each row in the file (1-based)
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// RFC 4180 fields: commas separate, double quotes enclose fields that hold commas, quotes
// ("" for one) or line breaks. CRLF and LF both end records.
CsvTable read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CsvTable t;
  std::vector<std::string> record;
  std::string field;
  bool quoted = false, field_started = false;
  std::int64_t line = 1, record_line = 1;
  auto end_record = [&] {
    record.push_back(field);
    field.clear();
    field_started = false;
    const bool blank = record.size() == 1 && trim(record[0]).empty();
    if (!blank) {
      if (t.header.empty()) {
        t.header = record;
      } else {
        t.rows.push_back(record);
        t.lines.push_back(record_line);
      }
    }
    record.clear();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (ch == '"' && trim(field).empty()) {
      quoted = true;
      field_started = true;
      field.clear();
    } else if (ch == ',') {
      record.push_back(field);
      field.clear();
      field_started = false;
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_record();
      ++line;
      record_line = line;
    } else {
      field += ch;
      field_started = true;
    }
  }
  if (quoted) throw DataError(path + ": row " + std::to_string(record_line) + ": a quoted field is never closed");
  if (field_started || !field.empty() || !record.empty()) end_record();
  if (t.header.empty()) throw DataError(path + ": empty file (expected a header row)");
  for (auto& h : t.header) h = trim(h);
  return t;
}

double parse_number(const std::string& cell, const std::string& path, std::int64_t line, const std::string& column) {
  const std::string s = trim(cell);
  errno = 0;
  char* end = nullptr;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) {
    throw DataError(path + ": row " + std::to_string(line) + ", column \"" + column + "\": \"" + s +
                    "\" is not a finite number");
  }
  return v;
}

struct Parsed {
  std::vector<float> features;
  std::vector<double> numeric_labels;
  std::vector<std::string> class_labels;
  std::int64_t rows = 0;
};

Parsed parse_table(const CsvTable& t, const std::string& path, std::size_t label_col, bool classification) {
  Parsed p;
  const std::size_t width = t.header.size();
  p.features.reserve(t.rows.size() * (width - 1));
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    if (row.size() != width) {
      throw DataError(path + ": row " + std::to_string(t.lines[r]) + " has " + std::to_string(row.size()) +
                      " cells, the header has " + std::to_string(width));
    }
    for (std::size_t c = 0; c < width; ++c) {
      if (c == label_col) {
        if (classification) {
          const std::string name = trim(row[c]);
          if (name.empty()) {
            throw DataError(path + ": row " + std::to_string(t.lines[r]) + ", column \"" + t.header[c] +
                            "\": empty class label");
          }
          p.class_labels.push_back(name);
        } else {
          p.numeric_labels.push_back(parse_number(row[c], path, t.lines[r], t.header[c]));
        }
      } else {
        p.features.push_back(static_cast<float>(parse_number(row[c], path, t.lines[r], t.header[c])));
      }
    }
  }
  p.rows = static_cast<std::int64_t>(t.rows.size());
  return p;
}

struct Split {
  std::vector<float> features;
  std::vector<std::int32_t> labels;
  std::vector<float> targets;
};

Split take_rows(const Parsed& p, const std::vector<std::int64_t>& rows, std::int64_t f, bool classification,
                const std::map<std::string, std::int32_t>& class_ids) {
  Split s;
  for (auto r : rows) {
    s.features.insert(s.features.end(), p.features.begin() + r * f, p.features.begin() + (r + 1) * f);
    if (classification) {
      s.labels.push_back(class_ids.at(p.class_labels[static_cast<std::size_t>(r)]));
    } else {
      s.targets.push_back(static_cast<float>(p.numeric_labels[static_cast<std::size_t>(r)]));
    }
  }
  return s;
}

}  // namespace

ImportResult import_csv(const CsvImportOptions& o) {
  const bool classification = o.task == "classification";
  if (!classification && o.task != "regression") {
    throw UsageError("import csv: task must be regression or classification, found \"" + o.task + "\"");
  }
  const CsvTable train_table = read_csv(o.path);
  const auto& header = train_table.header;
  const auto label_it = std::find(header.begin(), header.end(), o.label);
  if (label_it == header.end()) {
    std::string columns;
    for (const auto& h : header) columns += (columns.empty() ? "" : ", ") + h;
    throw DataError(o.path + ": no label column \"" + o.label + "\" (columns: " + columns + ")");
  }
  const auto label_col = static_cast<std::size_t>(label_it - header.begin());
  if (header.size() < 2) throw DataError(o.path + ": no feature columns besides the label \"" + o.label + "\"");
  std::set<std::string> seen;
  for (const auto& h : header) {
    if (h.empty()) throw DataError(o.path + ": the header has an empty column name");
    if (!seen.insert(h).second) throw DataError(o.path + ": the header names column \"" + h + "\" twice");
  }
  std::vector<std::string> feature_names;
  for (std::size_t c = 0; c < header.size(); ++c) {
    if (c != label_col) feature_names.push_back(header[c]);
  }
  const auto f = static_cast<std::int64_t>(feature_names.size());

  Parsed all = parse_table(train_table, o.path, label_col, classification);
  std::vector<std::int64_t> train_rows, test_rows;
  Parsed test_parsed;
  const bool separate_test = !o.test_path.empty();
  if (separate_test) {
    const CsvTable test_table = read_csv(o.test_path);
    if (test_table.header != header) {
      throw DataError(o.test_path + ": its header differs from " + o.path + "'s");
    }
    test_parsed = parse_table(test_table, o.test_path, label_col, classification);
    for (std::int64_t i = 0; i < all.rows; ++i) train_rows.push_back(i);
    for (std::int64_t i = 0; i < test_parsed.rows; ++i) test_rows.push_back(i);
  } else {
    // The same permutation machinery as the validation split, on its own stream index.
    const auto order = global_permutation(all.rows, o.seed, Stream::ValidationSplit, 1);
    const auto n_test = static_cast<std::int64_t>(std::llround(o.test_fraction * static_cast<double>(all.rows)));
    test_rows.assign(order.begin(), order.begin() + std::min<std::int64_t>(n_test, all.rows));
    train_rows.assign(order.begin() + std::min<std::int64_t>(n_test, all.rows), order.end());
    std::sort(train_rows.begin(), train_rows.end());
    std::sort(test_rows.begin(), test_rows.end());
  }
  if (train_rows.size() < 2 || test_rows.size() < 2) {
    throw DataError(o.path + ": " + std::to_string(train_rows.size()) + " training and " +
                    std::to_string(test_rows.size()) + " test rows; each split needs at least 2");
  }

  std::vector<std::string> class_names;
  std::map<std::string, std::int32_t> class_ids;
  if (classification) {
    std::set<std::string> names(all.class_labels.begin(), all.class_labels.end());
    names.insert(test_parsed.class_labels.begin(), test_parsed.class_labels.end());
    if (names.size() < 2) {
      throw DataError(o.path + ": column \"" + o.label + "\" has " + std::to_string(names.size()) +
                      " distinct class label(s); classification needs at least 2");
    }
    class_names.assign(names.begin(), names.end());
    for (std::size_t i = 0; i < class_names.size(); ++i) class_ids[class_names[i]] = static_cast<std::int32_t>(i);
  }
  const Split train = take_rows(all, train_rows, f, classification, class_ids);
  const Split test = take_rows(separate_test ? test_parsed : all, test_rows, f, classification, class_ids);

  std::string name = o.name;
  if (name.empty()) {
    name = o.path.substr(o.path.find_last_of('/') + 1);
    name = name.substr(0, name.find('.'));
  }
  const std::string tmp = o.output + ".tmp";
  ImportResult r;
  r.output = o.output;
  r.train_count = static_cast<std::int64_t>(train_rows.size());
  r.test_count = static_cast<std::int64_t>(test_rows.size());
  try {
    H5File out = H5File::create(tmp);
    write_tabular_header(out, name, "csv " + o.path + " (label " + o.label + ")",
                         classification ? Task::Classification : Task::Regression, feature_names, class_names);
    for (const auto& [split, data] : {std::pair<std::string, const Split*>{"train", &train}, {"test", &test}}) {
      write_tabular_split(out, split, f, data->features, classification ? &data->labels : nullptr,
                          classification ? nullptr : &data->targets);
    }
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), o.output.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw DataError(o.output + ": cannot move the imported file into place");
  }
  return r;
}

}  // namespace hpctrain
