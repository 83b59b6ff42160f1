#pragma once
// What a training run says as it goes: metrics.jsonl's step, epoch and test lines (rank 0,
// docs/outputs.md), the console's epoch and checkpoint lines, and the progress display.
// The lines are built by pure functions from the figures, so their keys, order and
// formatting are unit-tested without a run; StepLog only decides who writes them where.
#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/Config.hpp"
#include "eval/Metrics.hpp"
#include "train/MetricsLog.hpp"
#include "train/Progress.hpp"

namespace hpctrain {

struct EpochRecord {
  std::int64_t epoch = 0;
  bool classification = true;  // accuracies are written for classification only
  double train_loss = 0, train_accuracy = 0;
  double val_loss = 0, val_accuracy = 0;
  bool has_validation = false;
  double test_loss = 0, test_accuracy = 0;  // with train.test_every_epoch
  bool has_test = false;
  double train_seconds_total = 0;  // training time up to the end of this epoch
  double lr = 0;
  double seconds = 0;        // training time of the epoch (without evaluation)
  double samples_per_s = 0;  // global
  // Metrics of the catalog the run watches beyond the losses and accuracies above
  // (checkpoint.keep_best, train.target, train.early_stop_metric): "val_f1_macro", "test_rmse" ...
  std::vector<std::pair<std::string, double>> watched;
};

// One epoch's figures as written to metrics.jsonl and report.json (docs/outputs.md).
boost::json::object to_json(const EpochRecord& record);
EpochRecord epoch_record_from_json(const boost::json::object& record);
// A regression evaluation's figures beyond MSE and MAE, when it has them: PREFIXquantile_loss,
// PREFIXquantile_coverage, PREFIXmae_per_step (metrics.jsonl's test line, report.json's final).
void add_forecast_figures(boost::json::object& out, const EvalResult& result, const std::string& prefix);

// The figures of one logged step.
struct StepFigures {
  std::int64_t step = 0;  // optimizer steps done
  std::int64_t epoch = 0;
  double loss = 0;           // the global batch's mean loss
  double lr = 0;             // the rate the step used
  double samples_per_s = 0;  // global, over the epoch's steps so far
  double elapsed_s = 0;      // since the start of the run
  // train.nonfinite=skip: the step was skipped (its loss is not finite), and the steps
  // skipped so far in total. Written only when there are any.
  bool skipped = false;
  std::int64_t nonfinite_skipped = 0;
};

// metrics.jsonl lines.
boost::json::object step_line(const StepFigures& figures);
boost::json::object epoch_line(const EpochRecord& record);
boost::json::object test_line(const EvalResult& test, bool classification);
// The console's line after an epoch: "PREFIXepoch E: train loss L acc A | val ... | R samples/s | S s".
std::string epoch_console_line(const std::string& prefix, const EpochRecord& record);

class StepLog {
 public:
  // `metrics` is written by rank 0 only (`root`); the progress display is rank 0's too
  // (run.progress, a line every run.log_every steps); `prefix` starts each epoch line
  // ("[fold 3, group 1] "), so concurrent groups can be told apart.
  StepLog(MetricsLog& metrics, const RunConfig& run, bool root, std::int64_t total_steps, std::string prefix);
  void step(const StepFigures& figures);
  void epoch(const EpochRecord& record);
  void test(const EvalResult& test, bool classification);
  void checkpoint(const std::string& path);
  // A line of its own on rank 0's console, above the progress bar.
  void message(const std::string& text);
  // Ends the progress display (its bar's line); the run prints no more progress.
  void finish();

 private:
  MetricsLog& metrics_;
  Progress progress_;
  bool root_;
  std::string prefix_;
};

}  // namespace hpctrain
