// Dynamic loss scaling and autocast on CPU tensors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "train/MixedPrecision.hpp"

namespace hpctrain {
namespace {

PrecisionConfig fp16(double init = 1024.0, std::int64_t interval = 3) {
  PrecisionConfig c;
  c.mode = "fp16";
  c.init_scale = init;
  c.growth_interval = interval;
  return c;
}

TEST(LossScaler, DisabledOutsideFp16) {
  PrecisionConfig c;
  c.mode = "bf16";
  LossScaler s(c);
  EXPECT_FALSE(s.enabled());
  EXPECT_EQ(s.scale(), 1.0);
  auto loss = torch::tensor(2.5);
  EXPECT_TRUE(torch::equal(s.scale_loss(loss), loss));
  std::vector<torch::Tensor> g{torch::tensor({std::numeric_limits<float>::infinity()})};
  EXPECT_FALSE(s.unscale(g));  // nothing checked, nothing changed
  EXPECT_TRUE(std::isinf(g[0].item<float>()));
}

TEST(LossScaler, ScalesTheLossAndUnscalesGradients) {
  LossScaler s(fp16(1024.0));
  EXPECT_DOUBLE_EQ(s.scale_loss(torch::tensor(0.5)).item<double>(), 512.0);
  std::vector<torch::Tensor> g{torch::tensor({1024.0F, -2048.0F}), torch::tensor({512.0F})};
  EXPECT_FALSE(s.unscale(g));
  EXPECT_TRUE(torch::equal(g[0], torch::tensor({1.0F, -2.0F})));
  EXPECT_TRUE(torch::equal(g[1], torch::tensor({0.5F})));
}

TEST(LossScaler, FindsInfAndNanInAnyTensor) {
  LossScaler s(fp16());
  std::vector<torch::Tensor> inf{torch::ones({4}), torch::tensor({1.0F, std::numeric_limits<float>::infinity()})};
  EXPECT_TRUE(s.unscale(inf));
  std::vector<torch::Tensor> nan{torch::tensor({std::numeric_limits<float>::quiet_NaN()}), torch::ones({2})};
  EXPECT_TRUE(s.unscale(nan));
}

TEST(LossScaler, BacksOffOnOverflowAndGrowsAfterCleanSteps) {
  LossScaler s(fp16(1024.0, 3));
  s.update(true);  // overflow: halve, count a skipped step
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.state().skipped_steps, 1);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 512.0);  // 2 clean steps < interval 3
  s.update(true);               // an overflow resets the clean-step count
  EXPECT_EQ(s.scale(), 256.0);
  s.update(false);
  s.update(false);
  s.update(false);  // 3 clean steps in a row: grow
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.state().growth_tracker, 0);
  EXPECT_EQ(s.state().skipped_steps, 2);
}

TEST(LossScaler, StateRoundTrips) {
  LossScaler a(fp16(1024.0, 3));
  a.update(true);
  a.update(false);
  LossScaler b(fp16(1024.0, 3));
  b.restore(a.state());
  b.update(false);
  b.update(false);
  EXPECT_EQ(b.scale(), 1024.0);  // 512 grown after the restored clean step + 2 more
}

TEST(LossScaler, AGradientThatUnderflowsInFp16SurvivesWhenScaled) {
  // A gradient of 1e-6 underflows in fp16 unscaled (smallest subnormal ~6e-8 keeps it, 1e-8
  // does not); scaled by 2^16 it survives, and unscaling restores it in fp32.
  LossScaler s(fp16(65536.0));
  auto tiny = torch::tensor({1e-8F});
  EXPECT_EQ(tiny.to(torch::kHalf).item<float>(), 0.0F);
  std::vector<torch::Tensor> g{(tiny * static_cast<float>(s.scale())).to(torch::kHalf).to(torch::kFloat)};
  EXPECT_FALSE(s.unscale(g));
  EXPECT_NEAR(g[0].item<float>(), 1e-8F, 1e-10F);
}

// keep_on_device (here on CPU tensors, the same kernels a GPU runs): every decision equals
// the host's rule, step by step, and nothing is decided on the host.
TEST(LossScaler, OnTheDeviceFollowsTheHostRule) {
  LossScaler host(fp16(1024.0, 3));
  LossScaler device(fp16(1024.0, 3));
  device.keep_on_device(torch::kCPU);
  EXPECT_TRUE(device.on_device());
  EXPECT_EQ(device.scale(), 1024.0);
  for (bool overflow : {true, false, false, true, false, false, false, false, true, false, false, false}) {
    host.update(overflow);
    device.update(torch::full({1}, overflow ? 1.0F : 0.0F));
    EXPECT_EQ(device.scale(), host.scale());
    EXPECT_EQ(device.state().growth_tracker, host.state().growth_tracker);
    EXPECT_EQ(device.state().skipped_steps, host.state().skipped_steps);
  }
  EXPECT_EQ(device.state().skipped_steps, 3);
  device.update(true);  // the host-side call works on the device state too
  EXPECT_EQ(device.state().skipped_steps, 4);
}

TEST(LossScaler, UnscalesToAFlagOnTheDevice) {
  LossScaler s(fp16(1024.0));
  s.keep_on_device(torch::kCPU);
  EXPECT_DOUBLE_EQ(s.scale_loss(torch::tensor(0.5F)).item<double>(), 512.0);
  std::vector<torch::Tensor> clean{torch::tensor({1024.0F, -2048.0F}), torch::tensor({512.0F})};
  const auto none = s.unscale_to_flag(clean);
  ASSERT_TRUE(none.defined());
  EXPECT_EQ(none.item<float>(), 0.0F);
  EXPECT_TRUE(torch::equal(clean[0], torch::tensor({1.0F, -2.0F})));
  std::vector<torch::Tensor> bad{torch::ones({2}), torch::tensor({std::numeric_limits<float>::quiet_NaN()})};
  EXPECT_EQ(s.unscale_to_flag(bad).item<float>(), 1.0F);
  EXPECT_TRUE(s.unscale(bad));
  // Disabled: no flag at all.
  PrecisionConfig bf16;
  bf16.mode = "bf16";
  LossScaler off(bf16);
  off.keep_on_device(torch::kCPU);
  EXPECT_FALSE(off.unscale_to_flag(bad).defined());
}

TEST(LossScaler, StateRoundTripsBetweenHostAndDevice) {
  LossScaler a(fp16(1024.0, 3));
  a.keep_on_device(torch::kCPU);
  a.update(torch::ones({1}));
  a.update(torch::zeros({1}));
  LossScaler b(fp16(1024.0, 3));  // on the host
  b.restore(a.state());
  EXPECT_EQ(b.scale(), 512.0);
  EXPECT_EQ(b.state().growth_tracker, 1);
  EXPECT_EQ(b.state().skipped_steps, 1);
  LossScaler c(fp16(1024.0, 3));
  c.keep_on_device(torch::kCPU);
  c.restore(b.state());
  c.update(torch::zeros({1}));
  c.update(torch::zeros({1}));
  EXPECT_EQ(c.scale(), 1024.0);
  EXPECT_EQ(c.state().skipped_steps, 1);
}

TEST(LossScaler, ResumedWithAShorterIntervalStillGrows) {
  // A checkpoint from a run with growth_interval 10, seven clean steps in.
  const LossScalerState saved{1024.0, 7, 0};
  LossScaler host(fp16(1024.0, 3));
  host.restore(saved);
  LossScaler device(fp16(1024.0, 3));
  device.keep_on_device(torch::kCPU);
  device.restore(saved);
  host.update(false);
  device.update(torch::zeros({1}));
  EXPECT_EQ(host.scale(), 2048.0);
  EXPECT_EQ(device.scale(), 2048.0);  // ATen grows only when the count reaches the interval exactly
  EXPECT_EQ(device.state().growth_tracker, 0);
}

TEST(Autocast, CastsMatrixProductsInsideTheScopeOnly) {
  auto a = torch::randn({4, 4});
  {
    AutocastScope scope("bf16", torch::kCPU);
    EXPECT_EQ(torch::mm(a, a).scalar_type(), torch::kBFloat16);
    {
      AutocastScope inner("bf16", torch::kCPU);  // nests
      EXPECT_EQ(torch::mm(a, a).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(torch::mm(a, a).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(torch::mm(a, a).scalar_type(), torch::kFloat);
  {
    AutocastScope fp32("fp32", torch::kCPU);
    EXPECT_EQ(torch::mm(a, a).scalar_type(), torch::kFloat);
  }
  {
    AutocastScope half("fp16", torch::kCPU);
    EXPECT_EQ(torch::mm(a, a).scalar_type(), torch::kHalf);
  }
}

}  // namespace
}  // namespace hpctrain
