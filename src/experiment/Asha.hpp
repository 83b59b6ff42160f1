#pragma once
// Asynchronous successive halving (search.method=asha; Li et al., "A System for Massively
// Parallel Hyperparameter Tuning", 2020) as a pure state machine, fed by rank 0 as groups
// free up and results arrive: no MPI, no clock, so a hand-made arrival sequence tests it.
//
// Rungs as successive halving's: rung r trains search.halving_min_epochs * eta^r epochs,
// capped at train.epochs (the last rung). When a group needs work, the highest rung with a
// promotable trial gives it one: a trial among the best floor(n / eta) of the n results that
// rung has so far (ranked as halving ranks a rung: complete first, then the metric, then the
// trial index), not yet promoted. Without one, the next trial not started yet begins at
// rung 0. Without either, the group waits for the next result (or the search is over when
// nothing runs). A promotion made on a rung's first results stands even when later results
// push its trial out of the better part, so a rung can send on more than floor(n / eta).
#include <cstdint>
#include <optional>
#include <vector>

#include "experiment/Halving.hpp"

namespace hpctrain {

// The epochs of each rung: min_epochs, times eta each rung, the last one max_epochs.
std::vector<std::int64_t> asha_rung_epochs(std::int64_t min_epochs, std::int64_t eta, std::int64_t max_epochs);

// The trials of `results` (one rung's, in arrival order) that may go on: the best
// floor(n / eta), best first.
std::vector<int> asha_promotable(const std::vector<RungScore>& results, bool lower_is_better, std::int64_t eta);

struct AshaJob {
  int trial = 0;
  int rung = 0;
};

struct AshaPromotion {
  int trial = 0;
  int to_rung = 0;       // from to_rung - 1
  int rung_results = 0;  // results at the lower rung when the promotion was made
};

class AshaLadder {
 public:
  // `trials`: the trials in the order they start (indices); `rung_epochs`: asha_rung_epochs.
  AshaLadder(std::vector<int> trials, std::vector<std::int64_t> rung_epochs, std::int64_t eta, bool lower_is_better);

  // The next job (see above), recorded as started; nullopt when there is none now.
  std::optional<AshaJob> next();
  // The result of a job (score NaN or any_ok false for a trial whose folds all failed: it
  // counts among the rung's results and is never promoted).
  void report(int rung, const RungScore& score);

  int rung_count() const { return static_cast<int>(epochs_.size()); }
  std::int64_t epochs(int rung) const { return epochs_.at(static_cast<std::size_t>(rung)); }
  const std::vector<RungScore>& results(int rung) const { return results_.at(static_cast<std::size_t>(rung)); }
  const std::vector<AshaPromotion>& promotions() const { return promotions_; }

 private:
  std::vector<int> trials_;
  std::vector<std::int64_t> epochs_;
  std::int64_t eta_;
  bool lower_is_better_;
  std::size_t started_ = 0;                      // trials started at rung 0
  std::vector<std::vector<RungScore>> results_;  // by rung, in arrival order
  std::vector<std::vector<int>> promoted_;       // by rung: trials promoted out of it
  std::vector<AshaPromotion> promotions_;
};

}  // namespace hpctrain
