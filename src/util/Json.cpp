#include "util/Json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Shortest text that reads back as the same double; JSON has no NaN/Inf, so those are null.
std::string number_text(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[32];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

std::string scalar_text(const boost::json::value& v) {
  return v.is_double() ? number_text(v.get_double()) : boost::json::serialize(v);
}

void compact(std::string& out, const boost::json::value& v) {
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& kv : v.get_object()) {
      if (!first) out += ',';
      first = false;
      out += boost::json::serialize(boost::json::value(kv.key()));
      out += ':';
      compact(out, kv.value());
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& e : v.get_array()) {
      if (!first) out += ',';
      first = false;
      compact(out, e);
    }
    out += ']';
  } else {
    out += scalar_text(v);
  }
}

void pretty(std::ostringstream& out, const boost::json::value& v, int indent, int depth) {
  const std::string pad(static_cast<std::size_t>(indent * (depth + 1)), ' ');
  const std::string close_pad(static_cast<std::size_t>(indent * depth), ' ');
  if (v.is_object()) {
    const auto& obj = v.get_object();
    if (obj.empty()) {
      out << "{}";
      return;
    }
    out << "{\n";
    bool first = true;
    for (const auto& kv : obj) {
      if (!first) out << ",\n";
      first = false;
      out << pad << boost::json::serialize(boost::json::value(kv.key())) << ": ";
      pretty(out, kv.value(), indent, depth + 1);
    }
    out << "\n" << close_pad << "}";
  } else if (v.is_array()) {
    const auto& arr = v.get_array();
    bool scalars = true;
    for (const auto& e : arr) scalars = scalars && !e.is_object() && !e.is_array();
    if (scalars) {  // arrays of scalars stay on one line
      std::string line;
      compact(line, v);
      out << line;
      return;
    }
    out << "[\n";
    bool first = true;
    for (const auto& e : arr) {
      if (!first) out << ",\n";
      first = false;
      out << pad;
      pretty(out, e, indent, depth + 1);
    }
    out << "\n" << close_pad << "]";
  } else {
    out << scalar_text(v);
  }
}

}  // namespace

std::string compact_json(const boost::json::value& value) {
  std::string out;
  compact(out, value);
  return out;
}

std::string json_scalar_text(const boost::json::value& value) {
  return scalar_text(value);
}

std::string pretty_json(const boost::json::value& value, int indent) {
  std::ostringstream out;
  pretty(out, value, indent, 0);
  out << "\n";
  return out.str();
}

std::string json_kind(const boost::json::value& value) {
  switch (value.kind()) {
    case boost::json::kind::null:
      return "null";
    case boost::json::kind::bool_:
      return "boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
      return "integer";
    case boost::json::kind::double_:
      return "number";
    case boost::json::kind::string:
      return "string";
    case boost::json::kind::array:
      return "array";
    case boost::json::kind::object:
      return "object";
  }
  return "value";
}

boost::json::value parse_json_or_throw(const std::string& text, const std::string& origin) {
  boost::json::stream_parser parser;
  boost::system::error_code ec;
  const std::size_t consumed = parser.write_some(text.data(), text.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    const std::size_t at = std::min(consumed, text.size());
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw ConfigError(origin + ":" + std::to_string(line) + ":" + std::to_string(column) +
                      ": invalid JSON: " + ec.message());
  }
  return parser.release();
}

}  // namespace hpctrain
