#pragma once
// The one declaration of every config key: type, default, range, choices, doc string.
// Validation, defaults, command-line overrides, the resolved config and docs/config.md
// all come from it.
#include <optional>
#include <string>
#include <vector>

#include "config/Config.hpp"

namespace hpctrain {

enum class KeyType { Integer, Number, Boolean, String, IntegerList, Object };

struct KeySpec {
  std::string path;  // dotted, e.g. "optimizer.lr"
  KeyType type;
  std::string default_json;  // default as JSON text ("" for required keys)
  std::optional<double> min;
  std::optional<double> max;
  std::vector<std::string> choices;  // allowed strings (empty: any)
  std::string doc;
};

const std::vector<KeySpec>& config_schema();
std::string key_type_name(KeyType type);

// Loaded, validated and resolved configuration.
struct ResolvedConfig {
  Config config;
  std::string resolved_json;  // every key with its value, pretty-printed
};

// Reads `path`, validates it against the schema, applies `overrides` ("key.path=value"),
// and fills defaults. Throws ConfigError naming the file, full key path, expectation and
// what was found.
ResolvedConfig load_config(const std::string& path, const std::vector<std::string>& overrides);
// Same for JSON text already in memory (`origin` names it in messages).
ResolvedConfig parse_config(const std::string& text, const std::string& origin,
                            const std::vector<std::string>& overrides);

// Markdown reference of every key, generated from the schema.
std::string config_reference_markdown();

}  // namespace hpctrain
