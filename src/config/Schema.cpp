#include "config/Schema.hpp"

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "config/MetricCatalog.hpp"
#include "config/SchemaTable.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

const SchemaEntry* find_entry(const std::string& path) {
  for (const auto& e : schema_entries()) {
    if (e.spec.path == path) return &e;
  }
  return nullptr;
}

bool is_section(const std::string& path) {
  const std::string prefix = path + ".";
  for (const auto& e : schema_entries()) {
    if (e.spec.path.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

std::string keys_in_section(const std::string& section) {
  std::string out;
  const std::string prefix = section.empty() ? "" : section + ".";
  std::vector<std::string> seen;
  for (const auto& e : schema_entries()) {
    if (e.spec.path.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = e.spec.path.substr(prefix.size());
    rest = rest.substr(0, rest.find('.'));
    if (std::find(seen.begin(), seen.end(), rest) != seen.end()) continue;
    seen.push_back(rest);
    out += (out.empty() ? "" : ", ") + rest;
  }
  return out;
}

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string expectation(const KeySpec& s) {
  std::string what = key_type_name(s.type);
  if (!s.choices.empty()) {
    what = "one of";
    for (std::size_t i = 0; i < s.choices.size(); ++i) what += (i ? ", \"" : " \"") + s.choices[i] + "\"";
  }
  if (s.min && s.max) {
    what += " in [" + format_number(*s.min) + ", " + format_number(*s.max) + "]";
  } else if (s.min) {
    what += " >= " + format_number(*s.min);
  } else if (s.max) {
    what += " <= " + format_number(*s.max);
  }
  if (s.type == KeyType::IntegerList && (s.min || s.max))
    what = "a list of integers, each" + what.substr(what.find(' '));
  return what;
}

bool is_integer(const json::value& v) {
  if (v.is_int64() || v.is_uint64()) return true;
  return v.is_double() && std::floor(v.get_double()) == v.get_double() && std::abs(v.get_double()) < 9.007e15;
}

bool in_range(const KeySpec& s, double x) {
  return (!s.min || x >= *s.min) && (!s.max || x <= *s.max);
}

// Returns an empty string when `v` fits `s`, else what was found.
std::string mismatch(const KeySpec& s, const json::value& v) {
  const std::string found = json_kind(v) + " " + (v.is_array() ? compact_json(v) : json_scalar_text(v));
  switch (s.type) {
    case KeyType::Boolean:
      return v.is_bool() ? "" : found;
    case KeyType::String:
      if (!v.is_string()) return found;
      if (!s.choices.empty() &&
          std::find(s.choices.begin(), s.choices.end(), std::string(v.get_string())) == s.choices.end()) {
        return found;
      }
      return "";
    case KeyType::Integer:
      if (!is_integer(v)) return found;
      return in_range(s, json_as_number(v)) ? "" : found;
    case KeyType::Number:
      if (!v.is_number()) return found;
      return in_range(s, json_as_number(v)) ? "" : found;
    case KeyType::Object:
      return v.is_object() ? "" : found;
    case KeyType::IntegerList:
      // Empty only where the schema's own default is the empty list.
      if (!v.is_array() || (v.get_array().empty() && s.default_json != "[]")) return found;
      for (const auto& e : v.get_array()) {
        if (!is_integer(e) || !in_range(s, json_as_number(e))) return found;
      }
      return "";
  }
  return found;
}

json::value normalized(const KeySpec& s, const json::value& v) {
  // An integral double for an integer key (e.g. 1e3) is stored as an integer.
  if (s.type == KeyType::Integer && v.is_double()) return json::value(static_cast<std::int64_t>(v.get_double()));
  if (s.type == KeyType::IntegerList) {
    json::array out;
    for (const auto& e : v.get_array())
      out.push_back(e.is_double() ? json::value(static_cast<std::int64_t>(e.get_double())) : e);
    return out;
  }
  return v;
}

void set_checked(std::map<std::string, json::value>& values, const std::string& origin, const std::string& path,
                 const json::value& v) {
  const SchemaEntry* e = find_entry(path);
  if (e == nullptr) {
    const std::string section = path.find('.') == std::string::npos ? "" : path.substr(0, path.rfind('.'));
    throw ConfigError(origin + ": unknown key \"" + path + "\"" +
                      (is_section(section) || section.empty()
                           ? " (known keys" + (section.empty() ? std::string() : " in \"" + section + "\"") + ": " +
                                 keys_in_section(section) + ")"
                           : ""));
  }
  const std::string found = mismatch(e->spec, v);
  if (!found.empty()) {
    throw ConfigError(origin + ": " + path + ": expected " + expectation(e->spec) + ", found " + found);
  }
  values[path] = normalized(e->spec, v);
}

// Calls visit(path, value) for each key of `obj`, descending into the schema's sections.
template <class Visit>
void walk_config(const json::object& obj, const std::string& prefix, const Visit& visit) {
  for (const auto& kv : obj) {
    const std::string path = prefix.empty() ? std::string(kv.key()) : prefix + "." + std::string(kv.key());
    if (kv.value().is_object() && is_section(path)) {
      walk_config(kv.value().get_object(), path, visit);
    } else {
      visit(path, kv.value());
    }
  }
}

void flatten_checked(const json::object& obj, const std::string& origin, std::map<std::string, json::value>& values) {
  walk_config(obj, "", [&](const std::string& path, const json::value& v) {
    if (is_section(path)) {
      throw ConfigError(origin + ": " + path + ": expected an object with keys " + keys_in_section(path) + ", found " +
                        json_kind(v));
    }
    set_checked(values, origin, path, v);
  });
}

void insert_nested(json::object& root, const std::string& path, const json::value& v) {
  json::object* node = &root;
  std::size_t start = 0;
  for (std::size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = path.substr(start, dot - start);
    auto& child = (*node)[part];
    if (!child.is_object()) child = json::object();
    node = &child.get_object();
  }
  (*node)[path.substr(start)] = v;
}

}  // namespace

std::string key_type_name(KeyType type) {
  switch (type) {
    case KeyType::Integer:
      return "integer";
    case KeyType::Number:
      return "number";
    case KeyType::Boolean:
      return "boolean";
    case KeyType::String:
      return "string";
    case KeyType::IntegerList:
      return "list of integers";
    case KeyType::Object:
      return "object";
  }
  return "value";
}

const std::vector<KeySpec>& config_schema() {
  static const std::vector<KeySpec> specs = [] {
    std::vector<KeySpec> out;
    for (const auto& e : schema_entries()) out.push_back(e.spec);
    return out;
  }();
  return specs;
}

std::vector<std::pair<std::string, std::string>> flatten_config(const std::string& resolved_json) {
  const json::value doc = parse_json_or_throw(resolved_json, "config");
  if (!doc.is_object()) throw ConfigError("config: expected a JSON object at the top level, found " + json_kind(doc));
  std::vector<std::pair<std::string, std::string>> out;
  walk_config(doc.get_object(), "",
              [&](const std::string& path, const json::value& v) { out.emplace_back(path, compact_json(v)); });
  return out;
}

std::vector<std::pair<std::string, std::string>> config_values(const Config& config) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : schema_entries()) {
    json::value v = e.binding.extract(config);
    // Object-typed keys are held as their compact JSON text.
    if (e.spec.type == KeyType::Object) v = parse_json_or_throw(std::string(v.get_string()), e.spec.path);
    out.emplace_back(e.spec.path, compact_json(normalized(e.spec, v)));
  }
  return out;
}

std::string on_resume_name(OnResume rule) {
  switch (rule) {
    case OnResume::Fixed:
      return "fixed";
    case OnResume::Free:
      return "free";
    case OnResume::Extends:
      return "extends";
  }
  return "fixed";
}

ResolvedConfig parse_config(const std::string& text, const std::string& origin,
                            const std::vector<std::string>& overrides) {
  std::map<std::string, json::value> values;
  for (const auto& e : schema_entries()) {
    if (!e.spec.default_json.empty()) values[e.spec.path] = json::parse(e.spec.default_json);
  }
  const json::value doc = parse_json_or_throw(text, origin);
  if (!doc.is_object())
    throw ConfigError(origin + ": expected a JSON object at the top level, found " + json_kind(doc));
  flatten_checked(doc.get_object(), origin, values);

  for (const auto& ov : overrides) {
    const auto eq = ov.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw ConfigError("override \"" + ov + "\": expected key.path=value");
    }
    const std::string path = ov.substr(0, eq);
    const std::string raw = ov.substr(eq + 1);
    boost::system::error_code ec;
    json::value v = json::parse(raw, ec);
    if (ec) v = json::string(raw);  // bare words are strings: run.dir=runs/x
    set_checked(values, "override \"" + ov + "\"", path, v);
  }

  for (const auto& e : schema_entries()) {
    if (values.find(e.spec.path) == values.end()) {
      throw ConfigError(origin + ": missing required key \"" + e.spec.path + "\" (" + e.spec.doc + ")");
    }
  }
  if (json_as_int(values["cv.folds"]) == 1) {
    throw ConfigError(origin + ": cv.folds: expected 0 (off) or at least 2 folds, found 1");
  }
  if (std::string(values["data.path"].get_string()).empty()) {
    throw ConfigError(origin + ": data.path: expected the path of an HDF5 data set, found an empty string");
  }

  const std::string keep_best(values["checkpoint.keep_best"].get_string());
  if (keep_best != "none") parse_split_metric(keep_best, origin + ": checkpoint.keep_best");
  const std::string target(values["train.target"].get_string());
  if (!target.empty()) parse_metric_target(target, origin + ": train.target");

  ResolvedConfig out;
  json::object nested;
  for (const auto& e : schema_entries()) {
    const auto& v = values.at(e.spec.path);
    e.binding.assign(out.config, v);
    insert_nested(nested, e.spec.path, v);
  }
  out.resolved_json = pretty_json(nested);
  return out;
}

ResolvedConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_config(buffer.str(), path, overrides);
}

std::string config_reference_markdown() {
  std::ostringstream out;
  out << "# Configuration reference\n\n"
      << "Generated from the schema in `src/config/Schema.cpp` by `hpctrain config --docs`; do not edit by hand.\n\n"
      << "A config is a JSON object whose sections hold the keys below. Every key is optional except those "
         "without a default. Any key can be overridden on the command line as `key.path=value` "
         "(the value is parsed as JSON, or taken as a string when it is not JSON), and overrides pass the "
         "same checks. An unknown key, a wrong type or a value out of range is an error naming the full key "
         "path, what was expected and what was found. The resolved config is written to `RUN_DIR/config.json`.\n\n"
      << "*On resume* says what a resume may do with the key (`checkpoint.resume`, docs/checkpoints.md): "
         "`fixed`: part of what the run computes, a changed value is refused; `free`: where, how fast or how "
         "verbosely the steps run, or what is logged, may change (results then differ at most in the last bits); "
         "`extends`: how far training goes, a resumed run may change it and goes on, but a finished "
         "cross-validation or search task computed with another value runs again.\n";
  std::string section;
  for (const auto& s : config_schema()) {
    const std::string sec = s.path.substr(0, s.path.find('.'));
    if (sec != section) {
      section = sec;
      out << "\n## `" << section << "`\n\n| key | type | default | allowed | on resume | description |\n"
          << "|---|---|---|---|---|---|\n";
    }
    std::string allowed;
    if (!s.choices.empty()) {
      for (const auto& c : s.choices) allowed += (allowed.empty() ? "" : ", ") + std::string("`") + c + "`";
    } else if (s.min || s.max) {
      allowed = (s.min ? format_number(*s.min) : std::string("-inf")) + " .. " +
                (s.max ? format_number(*s.max) : std::string("inf"));
    }
    out << "| `" << s.path << "` | " << key_type_name(s.type) << " | "
        << (s.default_json.empty() ? "required" : "`" + s.default_json + "`") << " | " << allowed << " | "
        << on_resume_name(s.on_resume) << " | " << s.doc << " |\n";
  }
  return out.str();
}

}  // namespace hpctrain
