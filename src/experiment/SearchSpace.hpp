#pragma once
// The search space of a hyperparameter search (search.space): config key paths, or whole
// sections, each with a list of values or a distribution; and the trials drawn from it.
#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace hpctrain {

struct SearchDimension {
  std::string key;                         // "optimizer.lr", or a section name such as "model"
  std::vector<boost::json::value> values;  // a list (or an expanded range): grid-able
  std::string distribution;                // "", "uniform", "log_uniform", "int_uniform"
  double low = 0, high = 0;
};

struct SearchSpace {
  std::vector<SearchDimension> dimensions;  // in the order written
  bool is_grid() const;                     // lists and ranges only
  std::int64_t grid_size() const;
};

struct Trial {
  int id = 0;
  boost::json::object assignments;  // key path -> value
};

// Parses search.space (JSON object text) and checks every key against the config schema.
// Throws ConfigError naming the key and what is wrong.
SearchSpace parse_search_space(const std::string& space_json);
// Every combination, the first dimension varying slowest. Throws ConfigError for a
// distribution.
std::vector<Trial> grid_trials(const SearchSpace& space);
// `count` draws, trial t from stream (seed, t): the same trials for any rank count.
std::vector<Trial> random_trials(const SearchSpace& space, std::int64_t count, std::uint64_t seed);
// Trial t of random_trials (also the startup proposals of search.method=tpe).
boost::json::object random_assignments(const SearchSpace& space, std::uint64_t seed, int trial);

// The trial's config: `base` (a resolved config object) with the assignments applied (a
// section value replaces that whole section, unset keys taking their defaults), and
// cross-validation and search switched off so the file runs as a plain training.
boost::json::object trial_config(const boost::json::object& base, const boost::json::object& assignments);

// Short text of a trial's assignments: "optimizer.lr=0.01 model={name: mlp, ...}".
std::string describe_assignments(const boost::json::object& assignments);

}  // namespace hpctrain
