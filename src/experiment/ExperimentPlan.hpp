#pragma once
// The trials of a cross-validation or search and how they are scored, checked before
// anything trains: the same computation on every rank (and in search-merge), so a bad
// setting throws the same ConfigError everywhere.
#include <boost/json.hpp>

#include <cstddef>
#include <vector>

#include "config/Config.hpp"
#include "config/Schema.hpp"
#include "experiment/SearchSpace.hpp"

namespace hpctrain {

struct TrialPlan {
  Trial trial;  // trial.id is the trial's index in ExperimentPlan::trials
  Config config;
  boost::json::object config_json;  // the trial's complete config (best_config.json)
};

struct ExperimentPlan {
  std::vector<TrialPlan> trials;  // one (CONFIG itself) for a plain cross-validation
  bool use_cv = false;            // scored by k-fold cross-validation, else on the holdout
  std::size_t split_count = 1;    // folds x repeats, or the one holdout split
};

// Throws ConfigError naming the key (or the trial and key) for a setting that cannot run.
// search.method=tpe plans no trials (they are proposed as the search runs) but checks every
// value the space offers.
ExperimentPlan plan_experiment(const ResolvedConfig& base);

// One trial's config from the resolved base config (as a JSON object) and its assignments,
// checked as plan_experiment checks it.
TrialPlan make_trial_plan(const boost::json::object& base_json, Trial trial, bool searching, bool use_cv);

// The indices of the trials this job runs: those whose index modulo search.shards is
// search.shard (all of them for one job).
std::vector<int> shard_members(const ExperimentPlan& plan, std::int64_t shards, std::int64_t shard);

}  // namespace hpctrain
