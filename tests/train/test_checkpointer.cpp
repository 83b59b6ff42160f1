// When the training loop checkpoints and stops for preemption (train/Checkpointer): the
// decisions from fixed figures, no clock and no second rank; and one write on one rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "checkpoint/Checkpoint.hpp"
#include "launch/Signals.hpp"
#include "train/Checkpointer.hpp"

namespace hpctrain {
namespace {

CheckpointConfig every(std::int64_t steps, double minutes = 0, bool at_end = true) {
  CheckpointConfig c;
  c.every_steps = steps;
  c.every_minutes = minutes;
  c.at_end = at_end;
  return c;
}

constexpr StepAgreement kQuiet{};

TEST(CheckpointSchedule, EveryStepsCountsOptimizerSteps) {
  const CheckpointSchedule s(every(10), /*writes=*/true, /*stops_on_preemption=*/false, /*start_step=*/0);
  EXPECT_TRUE(s.armed());
  for (std::int64_t step = 1; step <= 35; ++step) {
    const CheckpointDecision d = s.after_step(step, kQuiet);
    EXPECT_EQ(d.write, step == 10 || step == 20 || step == 30) << "step " << step;
    EXPECT_FALSE(d.stop()) << "step " << step;
  }
}

TEST(CheckpointSchedule, EveryStepsOffWritesOnlyAtTheEnd) {
  const CheckpointSchedule s(every(0), true, false, 0);
  for (std::int64_t step = 1; step <= 100; ++step) EXPECT_FALSE(s.after_step(step, kQuiet).write) << step;
  EXPECT_TRUE(s.due_at_end(100));
}

TEST(CheckpointSchedule, AtEndOnlyWhenTheRunMadeAStep) {
  EXPECT_TRUE(CheckpointSchedule(every(0), true, false, 0).due_at_end(1));
  EXPECT_FALSE(CheckpointSchedule(every(0), true, false, 0).due_at_end(0));
  EXPECT_FALSE(CheckpointSchedule(every(0, 0, /*at_end=*/false), true, false, 0).due_at_end(50));
  // The last step of the run is also an every_steps multiple: written once after it, once at the end.
  const CheckpointSchedule s(every(25), true, false, 0);
  EXPECT_TRUE(s.after_step(50, kQuiet).write);
  EXPECT_TRUE(s.due_at_end(50));
}

TEST(CheckpointSchedule, ResumedRunKeepsTheGlobalStepCount) {
  // Resumed from a checkpoint at step 25: every_steps=10 falls on 30 and 40, as without the
  // interruption, not on 35.
  const CheckpointSchedule s(every(10), true, false, /*start_step=*/25);
  EXPECT_FALSE(s.after_step(26, kQuiet).write);
  EXPECT_TRUE(s.after_step(30, kQuiet).write);
  EXPECT_FALSE(s.after_step(35, kQuiet).write);
  EXPECT_TRUE(s.after_step(40, kQuiet).write);
  // A resumed run with no step left writes no checkpoint at the end (it would repeat the one
  // it resumed from); one that made a step does.
  EXPECT_FALSE(s.due_at_end(25));
  EXPECT_TRUE(s.due_at_end(26));
}

TEST(CheckpointSchedule, PreemptionWritesThenStops) {
  const CheckpointSchedule s(every(10), true, false, 0);
  const CheckpointDecision d = s.after_step(7, StepAgreement{SIGUSR1, false});
  EXPECT_TRUE(d.write);  // at any step, not only every_steps multiples
  EXPECT_TRUE(d.stop());
  EXPECT_EQ(d.signal, SIGUSR1);
}

TEST(CheckpointSchedule, PreemptionWithoutCheckpointsStopsOnly) {
  // Cross-validation and search tasks: no checkpoint dir, stop_on_preemption.
  const CheckpointSchedule s(every(10), /*writes=*/false, /*stops_on_preemption=*/true, 0);
  EXPECT_TRUE(s.armed());
  EXPECT_FALSE(s.timed());
  const CheckpointDecision d = s.after_step(10, StepAgreement{SIGTERM, false});
  EXPECT_FALSE(d.write);
  EXPECT_TRUE(d.stop());
  EXPECT_EQ(d.signal, SIGTERM);
  EXPECT_FALSE(s.after_step(10, kQuiet).write);
  EXPECT_FALSE(s.after_step(10, kQuiet).stop());
  EXPECT_FALSE(s.due_at_end(20));
}

TEST(CheckpointSchedule, UnarmedIgnoresEverything) {
  const CheckpointSchedule s(every(1, 1.0), false, false, 0);
  EXPECT_FALSE(s.armed());
  const CheckpointDecision d = s.after_step(1, StepAgreement{SIGTERM, true});
  EXPECT_FALSE(d.write);
  EXPECT_FALSE(d.stop());
}

TEST(CheckpointSchedule, EveryMinutesByTheAgreedClock) {
  const CheckpointSchedule s(every(0, 2.0), true, false, 0);
  EXPECT_TRUE(s.timed());
  EXPECT_FALSE(s.minutes_passed(119.9));
  EXPECT_TRUE(s.minutes_passed(120.0));
  EXPECT_TRUE(s.after_step(3, StepAgreement{0, true}).write);
  EXPECT_FALSE(s.after_step(3, StepAgreement{0, true}).stop());
  EXPECT_FALSE(s.after_step(3, kQuiet).write);
  // every_minutes off: the clock never makes one due.
  const CheckpointSchedule untimed(every(0), true, false, 0);
  EXPECT_FALSE(untimed.timed());
  EXPECT_FALSE(untimed.minutes_passed(1e9));
}

TEST(PreemptionError, OneMessageAndExitCode75) {
  const CollectiveError with = preemption_error(SIGUSR1, 812, "runs/x/checkpoints/step_0000000812.h5");
  EXPECT_STREQ(with.what(),
               "preempted by SIGUSR1 at step 812: checkpoint runs/x/checkpoints/step_0000000812.h5 written; run "
               "again with checkpoint.resume=auto to go on");
  EXPECT_EQ(with.exit_code(), kPreemptedExitCode);
  EXPECT_EQ(with.exit_code(), 75);
  EXPECT_EQ(with.origin_rank(), 0);
  const CollectiveError without = preemption_error(SIGTERM, 3, "");
  EXPECT_STREQ(without.what(), "preempted by SIGTERM at step 3");
  EXPECT_EQ(without.exit_code(), 75);
}

// On one rank: the file is named after the step, holds the position, and checkpoint.keep prunes.
TEST(Checkpointer, WritesAndPrunes) {
  // POSIX, not std::filesystem: LibTorch's library exports std::filesystem symbols of its own.
  std::string pattern = ::testing::TempDir() + "hpctrain_checkpointer_XXXXXX";
  ASSERT_NE(mkdtemp(pattern.data()), nullptr);
  const std::string dir = pattern;
  const Communicator world = Communicator::world();
  CheckpointConfig config = every(2);
  config.keep = 2;
  Checkpointer checkpointer(config, world, CheckpointLayout::data_parallel(world), dir, "{}", "{}", false, 0);
  torch::manual_seed(1);
  torch::nn::Linear model(3, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  std::string last;
  for (std::int64_t step = 1; step <= 6; ++step) {
    optimizer.zero_grad();
    model->forward(torch::ones({4, 3})).sum().backward();
    optimizer.step();
    if (!checkpointer.after_step(step).write) continue;
    LoopPosition at;
    at.step = step;
    at.epoch = 1;
    at.step_in_epoch = step - 1;
    last = checkpointer.write(at, 1.5 * static_cast<double>(step), step, *model, &optimizer);
  }
  EXPECT_EQ(checkpointer.written(), 3);
  EXPECT_GE(checkpointer.seconds(), 0.0);
  EXPECT_EQ(last, dir + "/" + checkpoint_file_name(6));
  const auto kept = list_checkpoints(dir);
  ASSERT_EQ(kept.size(), 2U);  // steps 6 and 4; 2 pruned
  EXPECT_EQ(kept[0], last);
  EXPECT_EQ(kept[1], dir + "/" + checkpoint_file_name(4));
  const CheckpointInfo info = verify_checkpoint(last);
  EXPECT_EQ(info.step, 6);
  EXPECT_EQ(info.position.step_in_epoch, 5);
  EXPECT_EQ(info.world_size, 1);
  for (const auto& path : kept) std::remove(path.c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace hpctrain
