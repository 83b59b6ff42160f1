#include <gtest/gtest.h>

#include "train/Optimizers.hpp"
#include "train/Schedule.hpp"

using namespace hpctrain;

TEST(LrSchedule, WarmupThenConstant) {
  ScheduleConfig c;
  c.name = "constant";
  c.warmup_steps = 10;
  LrSchedule s(c, 1.0, 100, 10);
  EXPECT_NEAR(s.at(0), 0.1, 1e-12);
  EXPECT_NEAR(s.at(4), 0.5, 1e-12);
  EXPECT_NEAR(s.at(9), 1.0, 1e-12);
  EXPECT_NEAR(s.at(50), 1.0, 1e-12);
}

TEST(LrSchedule, StepDecaysPerEpochs) {
  ScheduleConfig c;
  c.name = "step";
  c.step_epochs = 2;
  c.step_gamma = 0.5;
  LrSchedule s(c, 0.8, 100, 10);
  EXPECT_NEAR(s.at(0), 0.8, 1e-12);
  EXPECT_NEAR(s.at(19), 0.8, 1e-12);
  EXPECT_NEAR(s.at(20), 0.4, 1e-12);
  EXPECT_NEAR(s.at(45), 0.2, 1e-12);
}

TEST(LrSchedule, CosineFromPeakToFloor) {
  ScheduleConfig c;
  c.name = "cosine";
  c.warmup_steps = 10;
  c.min_lr_factor = 0.1;
  LrSchedule s(c, 1.0, 110, 10);
  EXPECT_NEAR(s.at(10), 1.0, 1e-12);
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);  // halfway: mean of peak and floor
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  for (int i = 11; i < 110; ++i) EXPECT_LE(s.at(i), s.at(i - 1) + 1e-15);
}

TEST(LrSchedule, OneCycleRisesThenFalls) {
  ScheduleConfig c;
  c.name = "onecycle";
  c.onecycle_pct_start = 0.25;
  c.onecycle_div_factor = 10;
  c.onecycle_final_div_factor = 100;
  LrSchedule s(c, 1.0, 101, 10);
  EXPECT_NEAR(s.at(0), 0.1, 1e-12);
  double peak = 0;
  int peak_at = 0;
  for (int i = 0; i <= 100; ++i) {
    if (s.at(i) > peak) {
      peak = s.at(i);
      peak_at = i;
    }
  }
  EXPECT_NEAR(peak, 1.0, 1e-3);  // the peak falls between steps, as in PyTorch's OneCycleLR
  EXPECT_NEAR(peak_at, 24, 1);
  EXPECT_NEAR(s.at(100), 0.001, 1e-9);
}

TEST(Optimizers, LearningRateIsSetOnEveryGroup) {
  auto w = torch::zeros({3}, torch::requires_grad());
  for (const char* name : {"sgd", "adam", "adamw"}) {
    OptimizerConfig c;
    c.name = name;
    auto opt = make_optimizer(c, {w});
    set_learning_rate(*opt, 0.125);
    EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), 0.125) << name;
  }
}

TEST(Optimizers, SgdStepMatchesTheFormula) {
  auto w = torch::ones({2}, torch::requires_grad());
  OptimizerConfig c;
  c.name = "sgd";
  c.lr = 0.1;
  c.momentum = 0.0;
  auto opt = make_optimizer(c, {w});
  (w * torch::tensor({2.0f, 4.0f})).sum().backward();
  opt->step();
  EXPECT_NEAR(w[0].item<float>(), 0.8f, 1e-6);
  EXPECT_NEAR(w[1].item<float>(), 0.6f, 1e-6);
}
