#pragma once
// A trial's figures across its folds (mean, std and 95% interval of every scalar metric, of
// the training time and of the throughput) and its standing in a search: the last rung it
// completed and whether every fold of that rung scored the metric.
#include <boost/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "eval/Scores.hpp"
#include "experiment/TaskOutcome.hpp"

namespace hpctrain {

// Figure name -> summary over the folds; names in alphabetical order, as reports list them.
using TrialSummary = std::map<std::string, Summary>;

// The successful outcomes of one trial (at one rung): every metric that is a number in an
// outcome (not "count"; a null metric is left out, so its n is smaller), train_seconds and
// samples_per_s.
TrialSummary summarize_trial(const std::vector<const TaskOutcome*>& ok);

// The mean and std of one figure; NaN when the trial has none.
double summary_mean(const TrialSummary& summary, const std::string& name);
double summary_std(const TrialSummary& summary, const std::string& name);
// How many folds scored `name` (0 when none did).
std::int64_t summary_count(const TrialSummary& summary, const std::string& name);

boost::json::object to_json(const TrialSummary& summary);

// Where a trial stands after the rungs so far (rank 0, and search-merge).
struct TrialStanding {
  TrialSummary summary;    // of the last rung it completed (at least one fold ok)
  int reached = 0;         // that rung
  bool incomplete = true;  // a fold of that rung failed or left the metric undefined
};

}  // namespace hpctrain
