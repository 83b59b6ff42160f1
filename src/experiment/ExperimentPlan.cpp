#include "experiment/ExperimentPlan.hpp"

#include <string>

#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// The search space's keys that would change what every trial is scored on.
void check_space(const SearchSpace& space, const Config& bc) {
  for (const auto& d : space.dimensions) {
    // Every trial is scored on the same rows: the data and the split stay those of CONFIG.
    if (d.key == "data" || d.key == "data.val_fraction") {
      throw ConfigError("search.space." + d.key + ": every trial is scored on the same split of the same data");
    }
    const bool rungs = bc.search.method == "halving" || bc.search.method == "asha";
    if (d.key == "train" || (rungs && d.key == "train.epochs")) {
      throw ConfigError("search.space." + d.key +
                        ": successive halving (halving, asha) sets the epochs of each rung "
                        "(search.halving_min_epochs, train.epochs); search other train keys one by one");
    }
  }
}

std::vector<Trial> draw_trials(const Config& bc) {
  if (bc.search.method == "none") return {Trial{}};
  const SearchSpace space = parse_search_space(bc.search.space_json);
  check_space(space, bc);
  const auto seed = static_cast<std::uint64_t>(bc.search.seed);
  if (bc.search.method == "grid") return grid_trials(space);
  if (bc.search.method == "random") return random_trials(space, bc.search.trials, seed);
  if (bc.search.method == "tpe") return {};  // proposed as groups free up (AsyncSearch)
  return space.is_grid() ? grid_trials(space) : random_trials(space, bc.search.trials, seed);
}

void check_shards(const Config& bc, std::size_t trial_count) {
  if (bc.search.shard >= bc.search.shards) {
    throw ConfigError("search.shard: " + std::to_string(bc.search.shard) + " is not below search.shards (" +
                      std::to_string(bc.search.shards) + ")");
  }
  if (bc.search.shards <= 1) return;
  if (bc.search.method == "none") throw ConfigError("search.shards: only a search (search.method) splits into shards");
  if (bc.search.method == "halving") {
    throw ConfigError(
        "search.shards: successive halving ranks every trial between rungs, so it runs as one job; split grid "
        "or random searches");
  }
  if (bc.search.method == "asha" || bc.search.method == "tpe") {
    throw ConfigError("search.shards: search.method=" + bc.search.method +
                      " decides each task from every result so far, so it runs as one job; split grid or random "
                      "searches");
  }
  if (static_cast<std::int64_t>(trial_count) <= bc.search.shard) {
    throw ConfigError("search.shard: shard " + std::to_string(bc.search.shard) + " of " +
                      std::to_string(bc.search.shards) + " has no trials (the search has " +
                      std::to_string(trial_count) + ")");
  }
}

// train.target on validation metrics stops on the held-out fold under cross-validation.
void check_target_outside_folds(bool use_cv, const Config& c, const std::string& origin) {
  if (use_cv && c.train.target.rfind("val_", 0) == 0) {
    throw ConfigError(origin + ": train.target: " + c.train.target +
                      " would stop on the held-out fold's metrics; remove it for cross-validation");
  }
}

// A tpe search's trials are proposed while it runs: each value a proposal can take is checked
// now, one dimension at a time with the others at trial 0's random draw, so a value the schema
// refuses stops the launch instead of failing trials.
void check_tpe_values(const ExperimentPlan& p, const json::object& base_json, const Config& bc) {
  const SearchSpace space = parse_search_space(bc.search.space_json);
  const json::object first = random_assignments(space, static_cast<std::uint64_t>(bc.search.seed), 0);
  for (const auto& d : space.dimensions) {
    std::vector<json::value> values = d.values;
    if (values.size() > 64) values = {d.values.front(), d.values.back()};
    if (d.distribution == "int_uniform") {
      values = {static_cast<std::int64_t>(d.low), static_cast<std::int64_t>(d.high)};
    } else if (!d.distribution.empty()) {
      values = {d.low, d.high};
    }
    for (const auto& v : values) {
      Trial t{0, first};
      t.assignments[d.key] = v;
      make_trial_plan(base_json, std::move(t), true, p.use_cv);
    }
  }
}

}  // namespace

TrialPlan make_trial_plan(const json::object& base_json, Trial trial, bool searching, bool use_cv) {
  TrialPlan plan;
  plan.config_json = trial_config(base_json, trial.assignments);
  const std::string origin =
      searching ? "search trial " + std::to_string(trial.id) + " (" + describe_assignments(trial.assignments) + ")"
                : "config";
  plan.config = parse_config(compact_json(plan.config_json), origin, {}).config;
  if (use_cv && plan.config.train.early_stop_patience > 0) {
    throw ConfigError(origin +
                      ": train.early_stop_patience: early stopping would select epochs on the held-out "
                      "fold; turn it off for cross-validation");
  }
  check_target_outside_folds(use_cv, plan.config, origin);
  plan.trial = std::move(trial);
  return plan;
}

ExperimentPlan plan_experiment(const ResolvedConfig& base) {
  const Config& bc = base.config;
  ExperimentPlan p;
  const bool searching = bc.search.method != "none";
  p.use_cv = !searching || bc.search.scoring == "cv" || (bc.search.scoring == "auto" && bc.cv.folds >= 2);
  if (p.use_cv && bc.cv.folds < 2) {
    throw ConfigError(searching ? "search.scoring: cv scoring needs cv.folds >= 2"
                                : "cv.folds: cross-validation needs at least 2 folds");
  }
  if (p.use_cv && bc.train.early_stop_patience > 0) {
    throw ConfigError(
        "train.early_stop_patience: early stopping would select epochs on the held-out fold; turn it off for "
        "cross-validation");
  }
  check_target_outside_folds(p.use_cv, bc, "config");
  const json::object base_json = json::parse(base.resolved_json).as_object();
  for (auto& t : draw_trials(bc)) p.trials.push_back(make_trial_plan(base_json, std::move(t), searching, p.use_cv));
  if (bc.search.method == "tpe") check_tpe_values(p, base_json, bc);
  check_shards(bc, p.trials.size());
  p.split_count = p.use_cv ? static_cast<std::size_t>(bc.cv.folds * bc.cv.repeats) : 1;
  return p;
}

std::vector<int> shard_members(const ExperimentPlan& plan, std::int64_t shards, std::int64_t shard) {
  std::vector<int> members;
  for (std::size_t t = 0; t < plan.trials.size(); ++t) {
    if (static_cast<std::int64_t>(t) % shards == shard) members.push_back(static_cast<int>(t));
  }
  return members;
}

}  // namespace hpctrain
