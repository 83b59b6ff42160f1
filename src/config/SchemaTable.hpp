#pragma once
// The schema's table as config/ itself uses it: each key's spec with how its value moves
// between JSON and the Config struct. Only config/ includes this header.
#include <boost/json.hpp>

#include <cstdint>
#include <functional>
#include <vector>

#include "config/Schema.hpp"

namespace hpctrain {

struct Binding {
  std::function<void(Config&, const boost::json::value&)> assign;  // JSON value -> Config field
  std::function<boost::json::value(const Config&)> extract;        // Config field -> JSON value
};

struct SchemaEntry {
  KeySpec spec;
  Binding binding;
};

const std::vector<SchemaEntry>& schema_entries();

inline std::int64_t json_as_int(const boost::json::value& v) {
  return v.is_int64() ? v.get_int64() : static_cast<std::int64_t>(v.get_uint64());
}
inline double json_as_number(const boost::json::value& v) {
  if (v.is_double()) return v.get_double();
  return static_cast<double>(json_as_int(v));
}

}  // namespace hpctrain
