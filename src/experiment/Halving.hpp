#pragma once
// Scoring a round of tasks and successive halving's promotion, as pure functions of the
// round's outcomes: rank 0 computes them and broadcasts the promoted trial indices.
#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "experiment/TaskOutcome.hpp"
#include "experiment/TrialSummary.hpp"

namespace hpctrain {

// One trial's result at one rung.
struct RungScore {
  int trial = 0;          // index (= id) of the trial
  bool any_ok = false;    // at least one fold finished
  TrialSummary summary;   // of its ok folds (empty when none)
  double score = 0;       // the metric's mean over the ok folds; NaN when undefined
  bool complete = false;  // the metric scored on every one of the rung's splits
};

// Each of `trials` (in that order) scored from `outcomes`, the round's outcomes (any order;
// an outcome belongs to the trial whose index is its `trial`).
std::vector<RungScore> score_rung(const std::vector<int>& trials, const std::vector<TaskOutcome>& outcomes,
                                  const std::string& metric, std::size_t split_count);

// A trial with at least one ok fold now stands at `rung` (a trial whose every fold failed
// at this rung keeps the standing of the rung before). `standings` is indexed by trial.
void update_standings(const std::vector<RungScore>& scores, int rung, std::vector<TrialStanding>& standings);

// The trials with a defined score, best first: complete before incomplete, then by the
// metric in its direction, then by trial index.
std::vector<int> rank_rung(const std::vector<RungScore>& scores, bool lower_is_better);

// Successive halving: the best ceil(n / eta) of the n trials that ran the rung, of those
// ranked (so fewer when trials have no score), best first.
std::vector<int> promote(const std::vector<RungScore>& scores, bool lower_is_better, std::int64_t eta);

// The rungs record of search_report.json: {"rung", "epochs", "trials": [{"trial", "score",
// "complete"}]}.
boost::json::object rung_record(int rung, std::int64_t epochs, const std::vector<RungScore>& scores);

}  // namespace hpctrain
