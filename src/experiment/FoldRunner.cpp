#include "experiment/FoldRunner.hpp"

#include <cmath>

#include "data/ShardedDataset.hpp"
#include "eval/Metrics.hpp"
#include "eval/Scores.hpp"
#include "experiment/GroupScheduler.hpp"
#include "launch/Signals.hpp"
#include "train/MetricsLog.hpp"
#include "train/Trainer.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

// Scores of the gathered held-out predictions, computed the way the saved predictions
// let anyone recompute them.
void score(const ShardedDataset& data, const std::vector<double>& targets, const std::vector<double>& loss,
           const std::vector<double>& outputs, TaskOutcome& out) {
  const auto n = static_cast<std::int64_t>(loss.size());  // samples (targets: S values each for [N, S])
  double loss_sum = 0;
  for (double l : loss) loss_sum += l;
  if (data.classification()) {
    const std::int64_t k = data.meta().num_classes;
    std::vector<std::int64_t> confusion(static_cast<std::size_t>(k * k), 0);
    const auto predicted = predicted_classes(outputs, k);
    for (std::int64_t i = 0; i < n; ++i) {
      ++confusion[static_cast<std::size_t>(static_cast<std::int64_t>(targets[i]) * k + predicted[i])];
    }
    out.metrics = to_json(classification_scores(confusion, k));
    std::vector<std::vector<std::int64_t>> rows(static_cast<std::size_t>(k));
    for (std::int64_t i = 0; i < k; ++i) rows[i].assign(confusion.begin() + i * k, confusion.begin() + (i + 1) * k);
    out.confusion = std::move(rows);
  } else {
    out.metrics = to_json(regression_scores(targets, outputs));
  }
  out.metrics["loss"] = n > 0 ? loss_sum / static_cast<double>(n) : 0.0;
}

// Trains and scores the task; fills `out` on the group's leader. Throws CollectiveError for
// a failure the group agrees on.
void train_and_score(const FoldTask& task, const Config& config, ShardedDataset& data, const TrainValSplit& split,
                     const ProcessGrid& grid, GroupScheduler& scheduler, int group_index, TaskOutcome& out) {
  const Communicator& group = grid.group();
  Config c = config;
  c.train.epochs = task.epochs;
  c.train.test_at_end = false;
  c.train.test_every_epoch = false;
  c.run.progress = "none";
  data.use_split(split, c.data, static_cast<std::uint64_t>(c.train.seed), grid.data());
  MetricsLog no_log;
  std::unique_ptr<Trainer> trainer;
  collective_check(group, [&] { trainer = std::make_unique<Trainer>(c, grid, data, no_log); });
  trainer->stop_on_preemption();
  trainer->set_step_callback([&scheduler] { scheduler.poll(); });
  std::string prefix = task.fold >= 0 ? "fold " + std::to_string(task.fold) : std::string("holdout");
  if (task.repeat > 0) prefix = "repeat " + std::to_string(task.repeat) + " " + prefix;
  if (task.in_search) prefix = "trial " + std::to_string(task.trial) + " " + prefix;
  trainer->set_log_prefix("[" + prefix + ", group " + std::to_string(group_index) + "] ");
  const TrainResult result = trainer->run();
  const LocalPredictions local = trainer->predict_held_out();
  scheduler.poll();

  // Replica r holds rows block_range(held-out count, replicas, r) of the sorted held-out
  // list, and its last stage the predictions. The last stage's ranks ascend with the
  // replica in either grid order, so gathering theirs in rank order restores the list.
  std::vector<double> targets, loss, outputs;
  if (grid.last_stage()) {
    const auto y = data.validation().targets.to(torch::kDouble).contiguous();
    targets.assign(y.data_ptr<double>(), y.data_ptr<double>() + y.numel());
    loss.assign(local.loss.data_ptr<double>(), local.loss.data_ptr<double>() + local.loss.numel());
    const auto o = local.outputs.contiguous();
    outputs.assign(o.data_ptr<double>(), o.data_ptr<double>() + o.numel());
  }
  auto all_targets = group.gatherv(targets, 0);
  auto all_loss = group.gatherv(loss, 0);
  auto all_outputs = group.gatherv(outputs, 0);

  double train_seconds = result.train_seconds;
  group.allreduce_max(&train_seconds, 1);
  if (group.rank() != 0) return;
  out.status = TaskStatus::Ok;
  score(data, all_targets, all_loss, all_outputs, out);
  out.train_seconds = train_seconds;
  out.samples_per_s = static_cast<double>(result.samples) / std::max(train_seconds, 1e-9);
  out.parameters = result.parameters;
  out.steps = result.steps;
  out.stop_reason = result.stop_reason;
  for (const auto& e : result.epochs) out.epoch_records.push_back(to_json(e));
  if (task.keep_predictions) {
    out.predictions = HeldOutPredictions{std::vector<std::int64_t>(split.validation.begin(), split.validation.end()),
                                         std::move(all_targets), std::move(all_loss), std::move(all_outputs)};
  }
}

}  // namespace

TaskOutcome run_fold_task(const FoldTask& task, const Config& config, ShardedDataset& data, const TrainValSplit& split,
                          const ProcessGrid& grid, GroupScheduler& scheduler, int group_index) {
  const Communicator& group = grid.group();
  TaskOutcome out;
  out.trial = task.trial;
  out.repeat = task.repeat;
  out.fold = task.fold;
  out.epochs = task.epochs;
  out.group = group_index;
  out.ranks = group.size();
  out.train_samples = static_cast<std::int64_t>(split.train.size());
  out.held_out_samples = static_cast<std::int64_t>(split.validation.size());
  const double start = wall_seconds();
  // A preemption signal that came between tasks: start no new one.
  double signalled = static_cast<double>(preemption_signal());
  group.allreduce_max(&signalled, 1);
  if (signalled != 0) {
    out.status = TaskStatus::Preempted;
    out.error = std::string("preempted by ") + signal_name(static_cast<int>(signalled)) + " before it started";
    out.wall_seconds = 0.0;
    return out;
  }
  try {
    train_and_score(task, config, data, split, grid, scheduler, group_index, out);
  } catch (const CollectiveError& e) {
    // Every rank of the group agreed on this failure: the other tasks go on. A preempted
    // task is neither ok nor failed: it runs again when the experiment resumes.
    out.status = e.exit_code() == kPreemptedExitCode ? TaskStatus::Preempted : TaskStatus::Failed;
    out.error = e.what();
  }
  out.wall_seconds = wall_seconds() - start;
  return out;
}

}  // namespace hpctrain
