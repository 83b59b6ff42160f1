#include "experiment/SearchSpace.hpp"

#include <cmath>

#include "config/Schema.hpp"
#include "data/Sampling.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

bool known_key(const std::string& key) {
  for (const auto& s : config_schema()) {
    if (s.path == key) return true;
  }
  return false;
}

bool known_section(const std::string& key) {
  for (const auto& s : config_schema()) {
    if (s.path.compare(0, key.size() + 1, key + ".") == 0) return true;
  }
  return false;
}

double number(const json::value& v, const std::string& where) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  throw ConfigError(where + ": expected a number, found " + json_kind(v));
}

bool integral(const json::value& v) {
  return v.is_int64() || v.is_uint64();
}

}  // namespace

bool SearchSpace::is_grid() const {
  for (const auto& d : dimensions) {
    if (!d.distribution.empty()) return false;
  }
  return true;
}

std::int64_t SearchSpace::grid_size() const {
  std::int64_t n = 1;
  for (const auto& d : dimensions) n *= static_cast<std::int64_t>(std::max<std::size_t>(1, d.values.size()));
  return n;
}

SearchSpace parse_search_space(const std::string& space_json) {
  const json::value doc = parse_json_or_throw(space_json, "search.space");
  if (!doc.is_object()) throw ConfigError("search.space: expected an object, found " + json_kind(doc));
  SearchSpace space;
  for (const auto& kv : doc.get_object()) {
    const std::string key(kv.key());
    const std::string where = "search.space." + key;
    if (key.rfind("cv.", 0) == 0 || key.rfind("search.", 0) == 0 || key == "cv" || key == "search" || key == "run" ||
        key.rfind("run.", 0) == 0) {
      throw ConfigError(where + ": cv, search and run settings are the same for every trial");
    }
    if (key == "data.path" || key == "data.limit_train" || key == "data.verify_hashes") {
      throw ConfigError(where +
                        ": every trial reads the same data (data.path, data.limit_train and "
                        "data.verify_hashes cannot vary)");
    }
    const bool section = !known_key(key) && known_section(key);
    if (!known_key(key) && !section) throw ConfigError(where + ": \"" + key + "\" is not a config key or section");
    SearchDimension d;
    d.key = key;
    const json::value& v = kv.value();
    if (v.is_array()) {
      if (v.get_array().empty()) throw ConfigError(where + ": the list of values is empty");
      for (const auto& x : v.get_array()) {
        if (section && !x.is_object()) {
          throw ConfigError(where + ": \"" + key + "\" is a section: each value must be an object, found " +
                            json_kind(x));
        }
        d.values.push_back(x);
      }
    } else if (v.is_object() && !section && v.get_object().size() == 1) {
      const auto& [name, arg] = *v.get_object().begin();
      const std::string form(name);
      if (!arg.is_array()) throw ConfigError(where + "." + form + ": expected an array of numbers");
      const auto& a = arg.get_array();
      if (form == "range") {
        if (a.size() != 3) throw ConfigError(where + ".range: expected [start, stop, step]");
        const double start = number(a[0], where + ".range"), stop = number(a[1], where + ".range"),
                     step = number(a[2], where + ".range");
        if (!(step > 0) || !(stop > start)) {
          throw ConfigError(where + ".range: expected start < stop and step > 0");
        }
        const bool ints = integral(a[0]) && integral(a[1]) && integral(a[2]);
        for (std::int64_t i = 0;; ++i) {
          const double x = start + static_cast<double>(i) * step;
          if (x >= stop - 1e-12 * std::abs(step)) break;
          if (i >= 100000) throw ConfigError(where + ".range: more than 100000 values");
          d.values.push_back(ints ? json::value(static_cast<std::int64_t>(std::llround(x))) : json::value(x));
        }
      } else if (form == "uniform" || form == "log_uniform" || form == "int_uniform") {
        if (a.size() != 2) throw ConfigError(where + "." + form + ": expected [low, high]");
        d.distribution = form;
        d.low = number(a[0], where + "." + form);
        d.high = number(a[1], where + "." + form);
        if (!(d.high > d.low)) throw ConfigError(where + "." + form + ": expected low < high");
        if (form == "log_uniform" && !(d.low > 0)) throw ConfigError(where + ".log_uniform: expected 0 < low");
        if (form == "int_uniform" && (std::floor(d.low) != d.low || std::floor(d.high) != d.high)) {
          throw ConfigError(where + ".int_uniform: expected integer bounds");
        }
      } else {
        throw ConfigError(where + ": unknown form \"" + form +
                          "\" (expected a list, range, uniform, log_uniform or int_uniform)");
      }
    } else {
      throw ConfigError(where +
                        ": expected a list of values or {\"uniform\"|\"log_uniform\"|\"int_uniform\"|"
                        "\"range\": [...]}, found " +
                        json_kind(v));
    }
    space.dimensions.push_back(std::move(d));
  }
  if (space.dimensions.empty()) throw ConfigError("search.space: name at least one key to search over");
  return space;
}

std::vector<Trial> grid_trials(const SearchSpace& space) {
  for (const auto& d : space.dimensions) {
    if (!d.distribution.empty()) {
      throw ConfigError("search.space." + d.key + ": grid search needs a list or a range, found a " + d.distribution +
                        " distribution (use search.method=random or halving)");
    }
  }
  const std::int64_t total = space.grid_size();
  if (total > 100000) throw ConfigError("search.space: the grid has " + std::to_string(total) + " trials");
  std::vector<Trial> trials;
  for (std::int64_t t = 0; t < total; ++t) {
    Trial trial;
    trial.id = static_cast<int>(t);
    // Mixed radix, the last dimension varying fastest.
    std::int64_t rest = t;
    std::vector<std::size_t> pick(space.dimensions.size());
    for (std::size_t i = space.dimensions.size(); i-- > 0;) {
      const auto n = static_cast<std::int64_t>(space.dimensions[i].values.size());
      pick[i] = static_cast<std::size_t>(rest % n);
      rest /= n;
    }
    for (std::size_t i = 0; i < space.dimensions.size(); ++i) {
      trial.assignments[space.dimensions[i].key] = space.dimensions[i].values[pick[i]];
    }
    trials.push_back(std::move(trial));
  }
  return trials;
}

json::object random_assignments(const SearchSpace& space, std::uint64_t seed, int trial) {
  json::object assignments;
  SplitMix64 g(stream_seed(seed, Stream::Search, static_cast<std::uint64_t>(trial)));
  for (const auto& d : space.dimensions) {
    json::value v;
    if (d.distribution.empty()) {
      v = d.values[static_cast<std::size_t>(g.below(d.values.size()))];
    } else if (d.distribution == "uniform") {
      v = d.low + (d.high - d.low) * g.uniform();
    } else if (d.distribution == "log_uniform") {
      v = std::exp(std::log(d.low) + (std::log(d.high) - std::log(d.low)) * g.uniform());
    } else {
      const auto span = static_cast<std::uint64_t>(d.high - d.low) + 1;
      v = static_cast<std::int64_t>(d.low) + static_cast<std::int64_t>(g.below(span));
    }
    assignments[d.key] = v;
  }
  return assignments;
}

std::vector<Trial> random_trials(const SearchSpace& space, std::int64_t count, std::uint64_t seed) {
  std::vector<Trial> trials;
  for (std::int64_t t = 0; t < count; ++t) {
    Trial trial;
    trial.id = static_cast<int>(t);
    trial.assignments = random_assignments(space, seed, static_cast<int>(t));
    trials.push_back(std::move(trial));
  }
  return trials;
}

json::object trial_config(const json::object& base, const json::object& assignments) {
  json::object c = base;
  // Whole sections first (the rest of a section takes defaults), then single keys, so a
  // key inside a replaced section is not lost whatever the order of the space.
  for (const auto& kv : assignments) {
    if (std::string(kv.key()).find('.') == std::string::npos) c[kv.key()] = kv.value();
  }
  for (const auto& kv : assignments) {
    const std::string key(kv.key());
    if (key.find('.') == std::string::npos) continue;
    json::object* node = &c;
    std::size_t start = 0;
    for (std::size_t d; (d = key.find('.', start)) != std::string::npos; start = d + 1) {
      auto& child = (*node)[key.substr(start, d - start)];
      if (!child.is_object()) child = json::object();
      node = &child.get_object();
    }
    (*node)[key.substr(start)] = kv.value();
  }
  c["cv"] = json::object{{"folds", 0}};
  c["search"] = json::object{{"method", "none"}};
  // A trial's config trains on its own: its run directory is the default for wherever it
  // runs (runs/<config name>, or the Slurm job's), never the search's own folder.
  if (auto* run = c.if_contains("run"); run && run->is_object()) run->as_object().erase("dir");
  return c;
}

std::string describe_assignments(const json::object& assignments) {
  std::string out;
  for (const auto& kv : assignments) {
    out += (out.empty() ? "" : " ") + std::string(kv.key()) + "=" + compact_json(kv.value());
  }
  return out;
}

}  // namespace hpctrain
