#include "io/CsvImporter.hpp"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "io/DatasetLayout.hpp"
#include "util/Error.hpp"
#include "util/Random.hpp"

namespace hpctrain {
namespace {

struct CsvTable {
  std::string path;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::int64_t> lines;  // line number of each row in the file (1-based)

  std::string where(std::int64_t line, std::size_t column) const {
    const std::string col =
        column < header.size() ? "column \"" + header[column] + "\"" : "column " + std::to_string(column + 1);
    return path + ": row " + std::to_string(line) + ", " + col;
  }
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// RFC 4180 fields: commas separate, double quotes enclose fields that hold commas, quotes
// ("" for one) or line breaks. CRLF, LF and a lone CR all end records. Spaces around a
// quoted field are tolerated because hand-edited files often have them after the comma.
CsvTable read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CsvTable t;
  t.path = path;
  std::vector<std::string> record;
  std::string field;
  enum class State { Unquoted, Quoted, AfterQuote } state = State::Unquoted;
  // A record that is one quoted empty field is data, not a blank line.
  bool record_quoted = false;
  std::int64_t line = 1, record_line = 1;
  auto end_field = [&] {
    record.push_back(std::move(field));
    field.clear();
    state = State::Unquoted;
  };
  auto end_record = [&] {
    end_field();
    const bool blank = record.size() == 1 && !record_quoted && trim(record[0]).empty();
    if (!blank) {
      if (t.header.empty()) {
        t.header = std::move(record);
        for (auto& h : t.header) h = trim(h);
      } else {
        t.rows.push_back(std::move(record));
        t.lines.push_back(record_line);
      }
    }
    record.clear();
    record_quoted = false;
  };
  // Spreadsheet exports often start with a UTF-8 byte order mark, which would otherwise
  // become part of the first column's name.
  std::size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  for (; i < text.size(); ++i) {
    const char ch = text[i];
    if (state == State::Quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (ch == '"') {
        state = State::AfterQuote;
      } else {
        if (ch == '\n' || (ch == '\r' && (i + 1 == text.size() || text[i + 1] != '\n'))) ++line;
        field += ch;
      }
    } else if (ch == ',') {
      end_field();
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_record();
      record_line = ++line;
    } else if (state == State::AfterQuote) {
      if (ch != ' ' && ch != '\t') {
        throw DataError(t.where(record_line, record.size()) + ": text after the closing quote of a quoted field");
      }
    } else if (ch == '"' && trim(field).empty()) {
      state = State::Quoted;
      record_quoted = true;
      field.clear();
    } else {
      field += ch;
    }
  }
  if (state == State::Quoted) {
    throw DataError(t.where(record_line, record.size()) + ": a quoted field is never closed");
  }
  if (state == State::AfterQuote || !field.empty() || !record.empty()) end_record();
  if (t.header.empty()) throw DataError(path + ": empty file (expected a header row)");
  return t;
}

// from_chars rather than strtod: the decimal point must not depend on the C locale.
double parse_number(const CsvTable& t, std::size_t row, std::size_t column) {
  const std::string s = trim(t.rows[row][column]);
  const std::string where = t.where(t.lines[row], column);
  if (s.empty()) throw DataError(where + ": empty cell, expected a number");
  const char* begin = s.data();
  const char* end = s.data() + s.size();
  if (*begin == '+' && s.size() > 1 && begin[1] != '-') ++begin;  // from_chars takes no plus sign
  double v = 0;
  const auto [stop, ec] = std::from_chars(begin, end, v);
  if (stop != end || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    throw DataError(where + ": \"" + s + "\" is not a number");
  }
  if (!std::isfinite(v)) throw DataError(where + ": \"" + s + "\" is not a finite number");
  // Values are stored as float32; a larger one would silently become infinity.
  if (ec == std::errc::result_out_of_range || std::fabs(v) > FLT_MAX)
    throw DataError(where + ": \"" + s + "\" is out of range for float32");
  return v;
}

struct Parsed {
  std::vector<float> features;
  std::vector<float> targets;
  std::vector<std::string> class_labels;
  std::int64_t rows = 0;
};

Parsed parse_table(const CsvTable& t, std::size_t label_col, bool classification) {
  Parsed p;
  const std::size_t width = t.header.size();
  p.features.reserve(t.rows.size() * (width - 1));
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    if (row.size() != width) {
      throw DataError(t.path + ": row " + std::to_string(t.lines[r]) + " has " + std::to_string(row.size()) +
                      " cells, the header has " + std::to_string(width));
    }
    for (std::size_t c = 0; c < width; ++c) {
      if (c != label_col) {
        p.features.push_back(static_cast<float>(parse_number(t, r, c)));
      } else if (!classification) {
        p.targets.push_back(static_cast<float>(parse_number(t, r, c)));
      } else {
        std::string name = trim(row[c]);
        if (name.empty()) throw DataError(t.where(t.lines[r], c) + ": empty class label");
        p.class_labels.push_back(std::move(name));
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
  s.features.reserve(rows.size() * static_cast<std::size_t>(f));
  for (auto r : rows) {
    s.features.insert(s.features.end(), p.features.begin() + r * f, p.features.begin() + (r + 1) * f);
    if (classification) {
      s.labels.push_back(class_ids.at(p.class_labels[static_cast<std::size_t>(r)]));
    } else {
      s.targets.push_back(p.targets[static_cast<std::size_t>(r)]);
    }
  }
  return s;
}

std::string shortest(double v) {
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr);
}

std::vector<std::int64_t> iota_rows(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

}  // namespace

ImportResult import_csv(const CsvImportOptions& o) {
  const bool classification = o.task == "classification";
  if (!classification && o.task != "regression") {
    throw UsageError("import csv: task must be regression or classification, found \"" + o.task + "\"");
  }
  if (o.label.empty()) throw UsageError("import csv: no label column given");
  if (o.output.empty()) throw UsageError("import csv: no output file given");
  const bool separate_test = !o.test_path.empty();
  if (!separate_test && !(o.test_fraction > 0 && o.test_fraction < 1)) {
    throw UsageError("import csv: the test fraction must lie in (0, 1), found " + shortest(o.test_fraction));
  }

  const CsvTable table = read_csv(o.path);
  const auto& header = table.header;
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

  const Parsed train_parsed = parse_table(table, label_col, classification);
  Parsed test_parsed;
  std::vector<std::int64_t> train_rows, test_rows;
  if (separate_test) {
    const CsvTable test_table = read_csv(o.test_path);
    if (test_table.header != header) {
      std::size_t c = 0;
      while (c < header.size() && c < test_table.header.size() && header[c] == test_table.header[c]) ++c;
      const std::string theirs = c < test_table.header.size() ? "\"" + test_table.header[c] + "\"" : "nothing";
      const std::string ours = c < header.size() ? "\"" + header[c] + "\"" : "nothing";
      throw DataError(o.test_path + ": the header differs from " + o.path + "'s: column " + std::to_string(c + 1) +
                      " is " + theirs + ", expected " + ours);
    }
    test_parsed = parse_table(test_table, label_col, classification);
    train_rows = iota_rows(train_parsed.rows);
    test_rows = iota_rows(test_parsed.rows);
    if (train_rows.size() < 2) {
      throw DataError(o.path + ": " + std::to_string(train_rows.size()) +
                      " data rows; the training split needs at least 2");
    }
    if (test_rows.size() < 2) {
      throw DataError(o.test_path + ": " + std::to_string(test_rows.size()) +
                      " data rows; the test split needs at least 2");
    }
  } else {
    // The permutation machinery of the validation split, on its own index, so the held-out
    // rows are reproducible from the seed alone.
    const auto order = global_permutation(train_parsed.rows, o.seed, Stream::ValidationSplit, 1);
    const auto n_test = std::min<std::int64_t>(train_parsed.rows,
                                               std::llround(o.test_fraction * static_cast<double>(train_parsed.rows)));
    test_rows.assign(order.begin(), order.begin() + n_test);
    train_rows.assign(order.begin() + n_test, order.end());
    std::sort(train_rows.begin(), train_rows.end());
    std::sort(test_rows.begin(), test_rows.end());
    if (train_rows.size() < 2 || test_rows.size() < 2) {
      throw DataError(o.path + ": " + std::to_string(train_parsed.rows) + " data rows split into " +
                      std::to_string(train_rows.size()) + " training and " + std::to_string(test_rows.size()) +
                      " test rows (test fraction " + shortest(o.test_fraction) + "); each split needs at least 2");
    }
  }

  std::vector<std::string> class_names;
  std::map<std::string, std::int32_t> class_ids;
  if (classification) {
    std::set<std::string> names(train_parsed.class_labels.begin(), train_parsed.class_labels.end());
    names.insert(test_parsed.class_labels.begin(), test_parsed.class_labels.end());
    if (names.size() < 2) {
      throw DataError(o.path + ": column \"" + o.label + "\" has " + std::to_string(names.size()) +
                      " distinct class label(s); classification needs at least 2");
    }
    class_names.assign(names.begin(), names.end());
    for (std::size_t i = 0; i < class_names.size(); ++i) class_ids[class_names[i]] = static_cast<std::int32_t>(i);
  }
  const Split train = take_rows(train_parsed, train_rows, f, classification, class_ids);
  const Split test = take_rows(separate_test ? test_parsed : train_parsed, test_rows, f, classification, class_ids);

  const std::string name = o.name.empty() ? std::filesystem::path(o.path).stem().string() : o.name;
  ImportResult r;
  r.output = o.output;
  r.train_count = static_cast<std::int64_t>(train_rows.size());
  r.test_count = static_cast<std::int64_t>(test_rows.size());
  write_dataset_atomically(o.output, [&](H5File& out) {
    write_tabular_header(out, name, "csv " + o.path + " (label " + o.label + ")",
                         classification ? Task::Classification : Task::Regression, feature_names, class_names);
    for (const auto& [split, data] : {std::pair<std::string, const Split*>{"train", &train}, {"test", &test}}) {
      write_tabular_split(out, split, f, data->features, classification ? &data->labels : nullptr,
                          classification ? nullptr : &data->targets);
    }
  });
  return r;
}

NumericColumns read_numeric_csv(const std::string& path, const std::vector<std::string>& drop) {
  const CsvTable table = read_csv(path);
  for (const auto& d : drop) {
    if (std::find(table.header.begin(), table.header.end(), d) == table.header.end()) {
      throw DataError(path + ": no column \"" + d + "\" to drop");
    }
  }
  std::vector<std::size_t> keep;
  NumericColumns out;
  std::set<std::string> seen;
  for (std::size_t c = 0; c < table.header.size(); ++c) {
    const auto& h = table.header[c];
    if (h.empty()) throw DataError(path + ": the header has an empty column name");
    if (!seen.insert(h).second) throw DataError(path + ": the header names column \"" + h + "\" twice");
    if (std::find(drop.begin(), drop.end(), h) != drop.end()) continue;
    keep.push_back(c);
    out.names.push_back(h);
  }
  if (keep.empty()) throw DataError(path + ": no columns left after dropping " + std::to_string(drop.size()));
  out.rows = static_cast<std::int64_t>(table.rows.size());
  out.values.reserve(static_cast<std::size_t>(out.rows) * keep.size());
  for (std::size_t r = 0; r < table.rows.size(); ++r) {
    if (table.rows[r].size() != table.header.size()) {
      throw DataError(path + ": row " + std::to_string(table.lines[r]) + " has " +
                      std::to_string(table.rows[r].size()) + " fields, the header " +
                      std::to_string(table.header.size()));
    }
    for (auto c : keep) out.values.push_back(static_cast<float>(parse_number(table, r, c)));
  }
  return out;
}

}  // namespace hpctrain
