// models/NormAct: the fused batch norm (+ residual) + ReLU computes what the layers compute in
// training: outputs, running statistics, and gradients of the input, the residual, the weight
// and the bias, within float rounding of statistics summed in another order; the ResNet with
// fused blocks against the same ResNet with model.fused_kernels=false, also checkpointed;
// evaluation unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fused_norm_checks.hpp"
#include "models/Model.hpp"
#include "models/NormAct.hpp"

namespace hpctrain {
namespace {

using testing::expect_close;
using testing::make_bn;
using testing::twin_norms;

struct Tolerance {
  double out_rtol, out_atol, grad_rtol, grad_atol, param_rtol, param_atol;
};
constexpr Tolerance kFloat{1e-5, 1e-5, 1e-4, 1e-5, 1e-4, 1e-4};
// bfloat16: one rounding step (2^-8 relative) apart at most, two for gradients.
constexpr Tolerance kBf16{1.0 / 128, 1e-2, 1.0 / 64, 2e-2, 1e-2, 1e-2};

// Two steps (the running statistics move twice) of the fused operator against the layers.
void expect_same_as_layers(const torch::Tensor& input, bool with_residual, const Tolerance& tol = kFloat,
                           c10::optional<double> momentum = 0.1) {
  const auto channels = input.size(1);
  auto [fused, plain] = twin_norms(channels, momentum);
  const auto skip = torch::randn(input.sizes()).to(input.scalar_type());
  for (int step = 0; step < 2; ++step) {
    auto a = (input + step).detach().requires_grad_(), b = (input + step).detach().requires_grad_();
    auto ra = skip.clone().requires_grad_(), rb = skip.clone().requires_grad_();
    const auto residual = with_residual ? ra : torch::Tensor();
    ASSERT_TRUE(fused_norm_act_applies(a, *fused, residual));
    const auto got = batch_norm_act(a, *fused, residual);
    const auto want = with_residual ? torch::relu(plain->forward(b) + rb) : torch::relu(plain->forward(b));
    ASSERT_EQ(got.scalar_type(), input.scalar_type());
    expect_close(got, want, tol.out_rtol, tol.out_atol, "output");
    const auto g = torch::randn(want.sizes()).to(input.scalar_type());
    got.backward(g);
    want.backward(g);
    expect_close(a.grad(), b.grad(), tol.grad_rtol, tol.grad_atol, "input gradient");
    if (with_residual) {
      EXPECT_TRUE(torch::equal(ra.grad(), rb.grad())) << "the residual's gradient is ReLU's, exactly";
    } else {
      EXPECT_FALSE(ra.grad().defined());
    }
    expect_close(fused->weight.grad(), plain->weight.grad(), tol.param_rtol, tol.param_atol, "weight gradient");
    expect_close(fused->bias.grad(), plain->bias.grad(), tol.param_rtol, tol.param_atol, "bias gradient");
  }
  expect_close(fused->running_mean, plain->running_mean, 1e-5, 1e-6, "running mean");
  expect_close(fused->running_var, plain->running_var, 1e-3, 1e-5, "running variance");
  EXPECT_EQ(fused->num_batches_tracked.item<std::int64_t>(), plain->num_batches_tracked.item<std::int64_t>());
}

TEST(NormAct, EqualsTheLayersOnRandomInputs) {
  torch::manual_seed(1);
  for (const bool residual : {false, true}) {
    expect_same_as_layers(torch::randn({4, 8, 28, 28}), residual);
    expect_same_as_layers(torch::randn({2, 5, 7, 3}), residual);                        // planes shorter than a vector
    expect_same_as_layers(torch::randn({3, 4, 9, 9}) * 3 + 7, residual);                // a mean far from zero
    expect_same_as_layers(torch::randn({2, 3, 6, 6}), residual, kFloat, c10::nullopt);  // cumulative average
  }
}

TEST(NormAct, EqualsTheLayersWithExactZeros) {
  // Small integers: many normalized values and sums land on ReLU's threshold exactly, where the
  // gradient must stop (LibTorch's threshold_backward passes it only where the output is > 0).
  torch::manual_seed(2);
  for (const bool residual : {false, true})
    expect_same_as_layers(torch::randint(0, 3, {4, 6, 10, 10}).to(torch::kFloat), residual);
}

TEST(NormAct, EqualsTheLayersOnBfloat16) {
  torch::manual_seed(7);
  for (const bool residual : {false, true}) {
    expect_same_as_layers(torch::randn({4, 8, 14, 14}).to(torch::kBFloat16), residual, kBf16);
    expect_same_as_layers(torch::randn({2, 5, 7, 3}).to(torch::kBFloat16), residual, kBf16);
  }
}

TEST(NormAct, WithoutRunningStatisticsOrGradientsOfTheInputs) {
  // A layer tracking no running statistics (no such autograd inputs), and inputs that need no
  // gradient: the parameters' gradients alone, as the layers give them.
  torch::manual_seed(8);
  torch::nn::BatchNorm2d fused(torch::nn::BatchNorm2dOptions(3).track_running_stats(false));
  torch::nn::BatchNorm2d plain(torch::nn::BatchNorm2dOptions(3).track_running_stats(false));
  const auto x = torch::randn({2, 3, 5, 5}), skip = torch::randn({2, 3, 5, 5});
  ASSERT_TRUE(fused_norm_act_applies(x, *fused, skip));
  const auto got = batch_norm_act(x, *fused, skip);
  const auto want = torch::relu(plain->forward(x) + skip);
  expect_close(got, want, 1e-5, 1e-5, "output");
  got.sum().backward();
  want.sum().backward();
  expect_close(fused->weight.grad(), plain->weight.grad(), 1e-4, 1e-4, "weight gradient");
  expect_close(fused->bias.grad(), plain->bias.grad(), 1e-5, 1e-5, "bias gradient");
}

TEST(NormAct, DoesNotApplyOutsideFloatTrainingOnCpu) {
  auto bn = make_bn(4, 0.1);
  const auto x = torch::randn({2, 4, 8, 8});
  EXPECT_TRUE(fused_norm_act_applies(x, *bn));
  EXPECT_TRUE(fused_norm_act_applies(x, *bn, torch::randn({2, 4, 8, 8})));
  EXPECT_FALSE(fused_norm_act_applies(x.to(torch::kDouble), *bn));
  EXPECT_FALSE(fused_norm_act_applies(x.contiguous(torch::MemoryFormat::ChannelsLast), *bn));
  EXPECT_FALSE(fused_norm_act_applies(x, *bn, torch::randn({2, 4, 8, 8}).to(torch::kBFloat16)));
  EXPECT_FALSE(fused_norm_act_applies(x, *bn, torch::randn({2, 4, 8, 4})));
  EXPECT_FALSE(fused_norm_act_applies(x, *bn, torch::randn({2, 4, 8, 8}).transpose(2, 3)));
  EXPECT_FALSE(fused_norm_act_applies(torch::randn({2, 3, 8, 8}), *bn));  // channels other than the layer's
  EXPECT_FALSE(fused_norm_act_applies(torch::randn({1, 4, 1, 1}), *bn));  // one value per channel: the layer refuses
  bn->eval();
  EXPECT_FALSE(fused_norm_act_applies(x, *bn));
}

// A ResNet with fused blocks against the same weights with model.fused_kernels=false: logits,
// every parameter's gradient, the running statistics; then evaluation, bit for bit.
void expect_resnet_matches_layers(const std::string& block, const std::string& stem, std::int64_t checkpoint_every) {
  ModelConfig c;
  c.name = "resnet";
  c.blocks = {1, 2};
  c.width = 8;
  c.block = block;
  c.stem = stem;
  c.checkpoint_every = checkpoint_every;
  const InputSpec in{{3, 16, 16}, 5};
  torch::manual_seed(4);
  auto fused = build_model(c, in);
  c.fused_kernels = false;
  torch::manual_seed(4);
  auto plain = build_model(c, in);
  const auto x = torch::randn({6, 3, 16, 16});
  const auto out = fused->forward(x);
  const auto want = plain->forward(x);
  const std::string label = block + "/" + stem + "/checkpoint " + std::to_string(checkpoint_every) + ": ";
  expect_close(out, want, 1e-4, 1e-5, label + "logits");
  out.square().sum().backward();
  want.square().sum().backward();
  const auto a = fused->named_parameters(), b = plain->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) expect_close(p.value().grad(), b[p.key()].grad(), 1e-3, 1e-4, label + p.key());
  const auto ab = fused->named_buffers(), bb = plain->named_buffers();
  for (const auto& p : ab) expect_close(p.value(), bb[p.key()], 1e-5, 1e-6, label + p.key());
  fused->eval();
  plain->eval();
  torch::NoGradGuard no_grad;
  for (const auto& p : ab) bb[p.key()].copy_(p.value());  // the same statistics on both sides
  EXPECT_TRUE(torch::equal(fused->forward(x), plain->forward(x))) << label << "evaluation";
}

TEST(NormAct, ResNetEqualsItsLayers) {
  expect_resnet_matches_layers("basic", "cifar", 0);
  expect_resnet_matches_layers("bottleneck", "imagenet", 0);
}

TEST(NormAct, CheckpointedResNetEqualsItsLayers) {
  expect_resnet_matches_layers("basic", "cifar", 1);
}

}  // namespace
}  // namespace hpctrain
