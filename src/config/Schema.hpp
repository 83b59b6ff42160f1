#pragma once
// The one declaration of every config key: type, default, range, choices, doc string.
// Validation, defaults, command-line overrides, the resolved config and docs/config.md
// all come from it.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/Config.hpp"

namespace hpctrain {

enum class KeyType { Integer, Number, Boolean, String, IntegerList, Object };

// What a resume may do with a key (config/Resume.hpp applies it; docs/config.md shows it).
//   Fixed:   part of what the run computes; a resume with another value is refused.
//   Free:    where, how fast or how verbosely the steps run, or what is logged (run.*,
//            checkpoint.*, device.*, comm.*, precision.*, ...): a resumed run or a requeued
//            experiment may change it, results then differ at most in the last bits.
//   Extends: how far training goes (train.epochs, ...): a resumed run may change it and goes
//            on, but a finished cross-validation or search task computed with another value
//            is not reused.
enum class OnResume { Fixed, Free, Extends };

struct KeySpec {
  std::string path;  // dotted, e.g. "optimizer.lr"
  KeyType type;
  std::string default_json;  // default as JSON text ("" for required keys)
  std::optional<double> min;
  std::optional<double> max;
  std::vector<std::string> choices;  // allowed strings (empty: any)
  std::string doc;
  OnResume on_resume = OnResume::Fixed;
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

// Every key of a resolved config (its JSON text) as dotted path -> compact JSON value, in
// schema order; object-typed keys (search.space) are one value. Keys the schema does not know
// are kept too, so a config written by another version compares key by key.
std::vector<std::pair<std::string, std::string>> flatten_config(const std::string& resolved_json);
// The values a Config holds, by dotted path as flatten_config gives them.
std::vector<std::pair<std::string, std::string>> config_values(const Config& config);
std::string on_resume_name(OnResume rule);

// Markdown reference of every key, generated from the schema.
std::string config_reference_markdown();

}  // namespace hpctrain
