// What the training loop writes (train/StepLog): metrics.jsonl's step, epoch and test lines
// (keys, order and number format as docs/outputs.md shows them) and the console's epoch
// line, from fixed figures; and who writes them (rank 0, stdout without a progress display).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "train/StepLog.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace {

StepFigures figures() {
  StepFigures f;
  f.step = 10;
  f.epoch = 0;
  f.loss = 1.5;
  f.lr = 0.0002;
  f.samples_per_s = 1038.25;
  f.elapsed_s = 1.25;
  return f;
}

// A classification epoch with validation and test figures.
EpochRecord classification_epoch() {
  EpochRecord r;
  r.epoch = 2;
  r.classification = true;
  r.train_loss = 0.5;
  r.train_accuracy = 0.75;
  r.has_validation = true;
  r.val_loss = 0.625;
  r.val_accuracy = 0.7;
  r.has_test = true;
  r.test_loss = 0.6875;
  r.test_accuracy = 0.65;
  r.lr = 0.001;
  r.seconds = 12.5;
  r.samples_per_s = 4096.25;
  r.train_seconds_total = 40.25;
  return r;
}

EpochRecord regression_epoch() {
  EpochRecord r;
  r.epoch = 0;
  r.classification = false;
  r.train_loss = 0.5;
  r.train_accuracy = 0.9;  // not written for regression
  r.lr = 0.01;
  r.seconds = 2.5;
  r.samples_per_s = 100.25;
  r.train_seconds_total = 2.5;
  return r;
}

TEST(StepLogLines, StepLine) {
  EXPECT_EQ(compact_json(step_line(figures())),
            R"({"type":"step","step":10,"epoch":0,"loss":1.5,"lr":0.0002,"samples_per_s":1038.25,"elapsed_s":1.25})");
}

// train.nonfinite=skip: a skipped step's loss is null (JSON has no NaN); the count appears
// once there is one.
TEST(StepLogLines, StepLineOfASkippedStep) {
  StepFigures f = figures();
  f.loss = std::nan("");
  f.skipped = true;
  f.nonfinite_skipped = 2;
  EXPECT_EQ(compact_json(step_line(f)),
            R"({"type":"step","step":10,"epoch":0,"loss":null,"lr":0.0002,"samples_per_s":1038.25,"elapsed_s":1.25,)"
            R"("skipped":true,"nonfinite_skipped":2})");
}

TEST(StepLogLines, EpochLineClassification) {
  EXPECT_EQ(compact_json(epoch_line(classification_epoch())),
            R"({"type":"epoch","epoch":2,"train_loss":0.5,"train_accuracy":0.75,"lr":0.001,"seconds":12.5,)"
            R"("samples_per_s":4096.25,"train_seconds_total":40.25,"val_loss":0.625,"val_accuracy":0.7,)"
            R"("test_loss":0.6875,"test_accuracy":0.65})");
}

TEST(StepLogLines, EpochLineRegressionHasNoAccuracies) {
  EXPECT_EQ(compact_json(epoch_line(regression_epoch())),
            R"({"type":"epoch","epoch":0,"train_loss":0.5,"lr":0.01,"seconds":2.5,"samples_per_s":100.25,)"
            R"("train_seconds_total":2.5})");
}

TEST(StepLogLines, EpochRecordReadsBack) {
  // report.json and a checkpoint's position carry the records; a resumed run reads them back.
  const EpochRecord r = epoch_record_from_json(to_json(classification_epoch()));
  EXPECT_EQ(compact_json(to_json(r)), compact_json(to_json(classification_epoch())));
  const EpochRecord g = epoch_record_from_json(to_json(regression_epoch()));
  EXPECT_FALSE(g.classification);
  EXPECT_FALSE(g.has_validation);
  EXPECT_EQ(compact_json(to_json(g)), compact_json(to_json(regression_epoch())));
}

TEST(StepLogLines, TestLineClassification) {
  EvalResult test;
  test.loss = 0.375;
  test.count = 10000;
  test.accuracy = 0.875;
  test.mse = 9;  // not written for classification
  EXPECT_EQ(compact_json(test_line(test, true)), R"({"type":"test","loss":0.375,"samples":10000,"accuracy":0.875})");
}

TEST(StepLogLines, TestLineRegressionWithForecastFigures) {
  EvalResult test;
  test.loss = 0.5;
  test.count = 20;
  test.mse = 2.25;
  test.mae = 1.5;
  EXPECT_EQ(compact_json(test_line(test, false)),
            R"({"type":"test","loss":0.5,"samples":20,"mse":2.25,"mae":1.5,"r2":null,"pearson":null})");
  test.r2 = 0.75;
  test.pearson = 0.875;
  test.quantile_loss = 0.125;
  test.quantile_coverage = {0.25, 0.5, 0.75};
  test.mae_per_step = {1.25, 1.75};
  EXPECT_EQ(compact_json(test_line(test, false)),
            R"({"type":"test","loss":0.5,"samples":20,"mse":2.25,"mae":1.5,"r2":0.75,"pearson":0.875,)"
            R"("quantile_loss":0.125,)"
            R"("quantile_coverage":[0.25,0.5,0.75],"mae_per_step":[1.25,1.75]})");
}

TEST(StepLogLines, EpochConsoleLine) {
  EXPECT_EQ(epoch_console_line("", classification_epoch()),
            "epoch 2: train loss 0.5000 acc 0.7500 | val loss 0.6250 acc 0.7000 | test loss 0.6875 acc 0.6500 | "
            "4096 samples/s | 12.5 s");
  EXPECT_EQ(epoch_console_line("[fold 1, group 0] ", regression_epoch()),
            "[fold 1, group 0] epoch 0: train loss 0.5000 | 100 samples/s | 2.5 s");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(StepLog, RankZeroWritesTheLinesAndPrintsTheEpoch) {
  const std::string path = ::testing::TempDir() + "step_log_" + std::to_string(getpid()) + ".jsonl";
  RunConfig run;
  run.progress = "none";  // console lines go to stdout
  run.log_every = 10;
  EvalResult test;
  test.loss = 0.375;
  test.count = 100;
  test.accuracy = 0.875;
  {
    MetricsLog metrics(path);
    StepLog log(metrics, run, /*root=*/true, /*total_steps=*/20, "");
    ::testing::internal::CaptureStdout();
    log.step(figures());
    log.epoch(classification_epoch());
    log.checkpoint("runs/x/checkpoints/step_0000000010.h5");
    log.test(test, true);
    log.finish();
    EXPECT_EQ(::testing::internal::GetCapturedStdout(),
              epoch_console_line("", classification_epoch()) + "\ncheckpoint runs/x/checkpoints/step_0000000010.h5\n");
  }
  EXPECT_EQ(read_file(path), compact_json(step_line(figures())) + "\n" +
                                 compact_json(epoch_line(classification_epoch())) + "\n" +
                                 compact_json(test_line(test, true)) + "\n");
  std::remove(path.c_str());
}

TEST(StepLog, OtherRanksSayNothing) {
  const std::string path = ::testing::TempDir() + "step_log_quiet_" + std::to_string(getpid()) + ".jsonl";
  RunConfig run;
  run.progress = "lines";
  {
    MetricsLog metrics(path);
    StepLog log(metrics, run, /*root=*/false, 20, "");
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    log.step(figures());
    log.epoch(classification_epoch());
    log.message("profile trace.json");
    log.finish();
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
    EXPECT_EQ(::testing::internal::GetCapturedStdout(), "");
  }
  EXPECT_EQ(read_file(path), "");
  std::remove(path.c_str());
}

TEST(StepLog, ProgressLinesEveryLogStep) {
  const std::string path = ::testing::TempDir() + "step_log_lines_" + std::to_string(getpid()) + ".jsonl";
  RunConfig run;
  run.progress = "lines";
  run.log_every = 10;
  MetricsLog metrics(path);
  StepLog log(metrics, run, true, 20, "fold 3: ");
  ::testing::internal::CaptureStderr();
  log.step(figures());
  log.epoch(regression_epoch());
  const std::string err = ::testing::internal::GetCapturedStderr();
  // The elapsed time and ETA of a test that takes no time: 00:00.
  EXPECT_EQ(err,
            "step 10/20 epoch 0 loss 1.5000 1038 samples/s elapsed 00:00 eta 00:00\n"
            "fold 3: epoch 0: train loss 0.5000 | 100 samples/s | 2.5 s\n");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace hpctrain
