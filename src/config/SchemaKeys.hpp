#pragma once
// How the schema table declares a key: its spec (key, with free or extends for its resume
// rule) and its binding to a Config field (bind). Only config/'s table files include this.
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "config/SchemaTable.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace schema_keys {

template <class Section, class Field>
Binding bind(Section Config::*section, Field Section::*field) {
  Binding b;
  namespace json = boost::json;
  b.assign = [section, field](Config& c, const json::value& v) {
    Field& target = c.*section.*field;
    if constexpr (std::is_same_v<Field, bool>) {
      target = v.get_bool();
    } else if constexpr (std::is_same_v<Field, std::int64_t>) {
      target = json_as_int(v);
    } else if constexpr (std::is_same_v<Field, double>) {
      target = json_as_number(v);
    } else if constexpr (std::is_same_v<Field, std::string>) {
      target = v.is_object() ? compact_json(v) : std::string(v.get_string());
    } else {
      target.clear();
      for (const auto& e : v.get_array()) target.push_back(json_as_int(e));
    }
  };
  b.extract = [section, field](const Config& c) -> json::value {
    const Field& value = c.*section.*field;
    if constexpr (std::is_same_v<Field, std::vector<std::int64_t>>) {
      json::array out;
      for (auto x : value) out.push_back(x);
      return out;
    } else {
      return json::value(value);
    }
  };
  return b;
}

inline KeySpec key(std::string path, KeyType type, std::string def, std::optional<double> min,
                   std::optional<double> max, std::vector<std::string> choices, std::string doc) {
  return KeySpec{std::move(path), type, std::move(def), min, max, std::move(choices), std::move(doc), OnResume::Fixed};
}

// Where, how fast or how verbosely the steps run, or what is logged: a resumed run or a
// requeued experiment may change it (results may then differ in the last bits).
inline KeySpec free(KeySpec k) {
  k.on_resume = OnResume::Free;
  return k;
}

// How far training goes: a resumed run may extend it, but it is part of what a finished
// cross-validation or search task computed.
inline KeySpec extends(KeySpec k) {
  k.on_resume = OnResume::Extends;
  return k;
}

}  // namespace schema_keys
}  // namespace hpctrain
