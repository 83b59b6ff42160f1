#pragma once
// Small helpers over Boost.JSON used by the config and report writers.
#include <boost/json.hpp>
#include <string>

namespace hpctrain {

// Indented JSON text (Boost.JSON 1.81 only serializes on one line).
std::string pretty_json(const boost::json::value& value, int indent = 2);
// One-line JSON with numbers written shortest-round-trip (1.5, not 1.5E0).
std::string compact_json(const boost::json::value& value);
// A scalar as JSON text, numbers as above.
std::string json_scalar_text(const boost::json::value& value);
// Human-readable name of a JSON value's kind: "string", "number", "object" ...
std::string json_kind(const boost::json::value& value);
// Parses JSON text; on error throws ConfigError naming `origin`, line and column.
boost::json::value parse_json_or_throw(const std::string& text, const std::string& origin);

}  // namespace hpctrain
