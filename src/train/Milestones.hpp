#pragma once
// What the training loop decides after each epoch's evaluation, beyond the steps: early
// stopping (train.early_stop_*) with the best epoch's weights kept to restore before the
// final test, the best epoch for checkpoint.keep_best, and train.target (docs/checkpoints.md,
// "Best model and targets"). Every rank decides alike: the figures are reduced over the ranks.
#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "config/Config.hpp"
#include "config/MetricCatalog.hpp"
#include "eval/Metrics.hpp"
#include "train/StepLog.hpp"

namespace hpctrain {

struct EpochVerdict {
  bool stop = false;
  std::string reason;     // "early_stopping" or "target" when stopping
  bool new_best = false;  // checkpoint.keep_best: this epoch is the best so far
  bool target_reached = false;
  double target_value = 0;  // the target metric's value at this epoch
};

class Milestones {
 public:
  // Checks the metrics against the task (ConfigError naming the key).
  Milestones(const Config& config, bool classification);
  // The epochs a resumed run already did: checkpoint.keep_best's best so far is among them.
  // `best_file`: checkpoint.keep_best's best.h5 of the run ("": none), whose weights an early
  // stop restores when keep_best watches the early-stopping metric and no epoch since the
  // resume improved on it (the in-memory copy did not survive the resume).
  void resumed(const std::vector<EpochRecord>& past, const std::string& best_file);
  // The watched metrics beyond loss and accuracy, into `record.watched` from the epoch's
  // validation and test evaluations (null: not evaluated).
  void record_metrics(EpochRecord& record, const EvalResult* validation, const EvalResult* test) const;
  // After `record` (metrics recorded): early stopping against `best` and
  // `epochs_without_improvement` (the loop's, kept in checkpoints; lower is better), a copy of
  // `model`'s parameters and buffers when the early-stop metric improved and the weights are
  // to be restored, checkpoint.keep_best and train.target.
  EpochVerdict after_epoch(const EpochRecord& record, double& best, std::int64_t& epochs_without_improvement,
                           torch::nn::Module& model);
  // train.early_stop_restore_best after an early stop: copies the best epoch's weights back
  // into `model` (from memory, or after a resume from best.h5). Returns that epoch (-1: none
  // kept, nothing restored). Every rank reads best.h5 itself.
  std::int64_t restore_best(torch::nn::Module& model);
  // A metric of `record` by key ("val_loss", "test_accuracy", "val_f1_macro"); NaN when absent.
  static double value_of(const EpochRecord& record, const std::string& key);
  bool keeps_best() const { return keep_best_.has_value(); }
  // after_epoch copies the model's weights when an epoch is the best so far (whole parameters needed).
  bool copies_weights() const { return restore_ && patience_ > 0; }

 private:
  std::vector<std::string> watched_;  // keys recorded into EpochRecord::watched
  std::optional<SplitMetric> keep_best_;
  double best_kept_ = std::numeric_limits<double>::infinity();  // lower is better
  std::optional<MetricTarget> target_;
  std::string early_metric_;
  std::int64_t patience_ = 0;
  double min_delta_ = 0;
  bool restore_ = false;
  std::vector<torch::Tensor> best_weights_;  // parameters then buffers, module order
  std::int64_t best_epoch_ = -1;
  std::string best_file_;  // after a resume: best.h5 when it holds the early-stopping metric's best
};

}  // namespace hpctrain
