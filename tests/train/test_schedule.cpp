#include <gtest/gtest.h>

#include <sstream>

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

namespace {
OptimizerConfig adam_config(const char* name) {
  OptimizerConfig c;
  c.name = name;
  c.lr = 0.01;
  c.weight_decay = 0.1;
  return c;
}

// One step of `opt` on the loss sum(w * g): the gradient of w is g.
void step_on(torch::optim::Optimizer& opt, torch::Tensor& w, const torch::Tensor& g) {
  opt.zero_grad();
  (w * g).sum().backward();
  opt.step();
}

// Adam's or AdamW's: their states are unrelated types (casting one to the other is undefined
// behaviour, which UBSan reports).
std::int64_t adam_step_count(torch::optim::Optimizer& opt, const torch::Tensor& p) {
  auto& state = *opt.state().at(p.unsafeGetTensorImpl());
  if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(&state)) return adamw->step();
  return dynamic_cast<torch::optim::AdamParamState&>(state).step();
}
}  // namespace

// The fused kernel and LibTorch's loop are the same optimizer: same updates, and the same
// state, so a checkpoint of one resumes in the other.
TEST(Optimizers, FusedAdamMatchesTheLoopAndSharesItsState) {
  for (const char* name : {"adam", "adamw"}) {
    const auto c = adam_config(name);
    torch::manual_seed(3);
    auto a = torch::randn({5, 7}, torch::requires_grad());
    auto b = a.detach().clone().requires_grad_(true);
    auto loop = make_optimizer(c, {a}, /*fused=*/false);
    auto fused = make_optimizer(c, {b}, /*fused=*/true);
    for (int i = 0; i < 5; ++i) {
      const auto g = torch::randn({5, 7});
      step_on(*loop, a, g);
      step_on(*fused, b, g);
    }
    EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-7)) << name << ": " << (a - b).abs().max().item<float>();
    // The loop's state, saved and loaded into a fresh fused optimizer, continues identically.
    std::stringstream saved;
    torch::save(*loop, saved);
    auto w = a.detach().clone().requires_grad_(true);
    auto resumed = make_optimizer(c, {w}, /*fused=*/true);
    torch::load(*resumed, saved);
    const auto g = torch::randn({5, 7});
    step_on(*loop, a, g);
    step_on(*resumed, w, g);
    EXPECT_TRUE(torch::allclose(a, w, 1e-5, 1e-7)) << name << " after load: " << (a - w).abs().max().item<float>();
  }
}

// fp16 with a fused optimizer: a step whose flag is set changes nothing, its step count
// included (after the counts are brought back from the device), like a step not taken.
TEST(Optimizers, FusedAdamSkipsOnTheDeviceFlag) {
  for (const char* name : {"adam", "adamw"}) {
    const auto c = adam_config(name);
    torch::manual_seed(5);
    auto a = torch::randn({4, 3}, torch::requires_grad());
    auto b = a.detach().clone().requires_grad_(true);
    auto flagged = make_optimizer(c, {a}, /*fused=*/true);
    auto plain = make_optimizer(c, {b}, /*fused=*/true);
    ASSERT_TRUE(is_fused(*flagged));
    for (int i = 0; i < 6; ++i) {
      const auto g = torch::randn({4, 3});
      const bool overflow = i == 1 || i == 4;
      ASSERT_TRUE(skip_next_step_on(*flagged, torch::full({1}, overflow ? 1.0F : 0.0F)));
      step_on(*flagged, a, g);
      if (!overflow) step_on(*plain, b, g);
      EXPECT_TRUE(torch::equal(a, b)) << name << " step " << i;
    }
    synchronize_optimizer_state(*flagged);
    EXPECT_EQ(adam_step_count(*flagged, a), 4) << name;
    EXPECT_EQ(adam_step_count(*plain, b), 4) << name;
    // The next step goes on from the synchronized count: still equal.
    const auto g = torch::randn({4, 3});
    step_on(*flagged, a, g);
    step_on(*plain, b, g);
    EXPECT_TRUE(torch::equal(a, b)) << name;
  }
}

// A captured step reads its rate from the device: same updates as the rate as a number.
TEST(Optimizers, FusedAdamReadsTheRateFromTheDevice) {
  OptimizerConfig c;
  c.name = "adamw";
  c.lr = 0.5;  // replaced below; powers of two are exact in the fp32 tensor
  torch::manual_seed(6);
  auto a = torch::randn({6}, torch::requires_grad());
  auto b = a.detach().clone().requires_grad_(true);
  auto number = make_optimizer(c, {a}, /*fused=*/true);
  auto tensor = make_optimizer(c, {b}, /*fused=*/true);
  ASSERT_TRUE(read_learning_rate_from_device(*tensor));
  for (double lr : {0.125, 0.125, 0.0625, 0.03125}) {
    set_learning_rate(*number, lr);
    set_learning_rate(*tensor, lr);
    const auto g = torch::randn({6});
    step_on(*number, a, g);
    step_on(*tensor, b, g);
    EXPECT_TRUE(torch::equal(a, b)) << "lr " << lr;
  }
  // LibTorch's own optimizers have no device side.
  c.name = "sgd";
  auto sgd = make_optimizer(c, {a});
  EXPECT_FALSE(is_fused(*sgd));
  EXPECT_FALSE(skip_next_step_on(*sgd, torch::zeros({1})));
  EXPECT_FALSE(read_learning_rate_from_device(*sgd));
  c.name = "adam";
  EXPECT_FALSE(is_fused(*make_optimizer(c, {a}, /*fused=*/false)));
}

TEST(Optimizers, FusedIsTheDefault) {
  OptimizerConfig c;
  EXPECT_TRUE(use_fused_optimizer(c));
  c.fused = "on";
  EXPECT_TRUE(use_fused_optimizer(c));
  c.fused = "off";
  EXPECT_FALSE(use_fused_optimizer(c));
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
