// models/NormPool: the fused batch norm + ReLU + 2x2 max pool computes what the three layers
// compute in training: outputs, running statistics, and gradients of the input, the weight
// and the bias, within float rounding of statistics summed in another order; the CNN with the
// fused stages against its layers run one by one, also checkpointed; evaluation unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fused_norm_checks.hpp"
#include "models/Model.hpp"
#include "models/NormPool.hpp"
#include "models/NormPoolKernels.hpp"

namespace hpctrain {
namespace {

using testing::expect_close;
using testing::make_bn;
using testing::twin_norms;

// Two steps (the running statistics move twice) of the fused operator against the layers.
void expect_same_as_layers(const torch::Tensor& input, c10::optional<double> momentum = 0.1) {
  const auto channels = input.size(1);
  auto [fused, plain] = twin_norms(channels, momentum);
  for (int step = 0; step < 2; ++step) {
    auto a = (input + step).detach().requires_grad_();
    auto b = (input + step).detach().requires_grad_();
    ASSERT_TRUE(fused_norm_pool_applies(a, *fused));
    const auto got = batch_norm_relu_pool(a, *fused);
    const auto want = torch::max_pool2d(torch::relu(plain->forward(b)), {2, 2});
    expect_close(got, want, 1e-5, 1e-5, "output");
    const auto g = torch::randn(want.sizes());
    got.backward(g);
    want.backward(g);
    expect_close(a.grad(), b.grad(), 1e-4, 1e-5, "input gradient");
    expect_close(fused->weight.grad(), plain->weight.grad(), 1e-4, 1e-4, "weight gradient");
    expect_close(fused->bias.grad(), plain->bias.grad(), 1e-5, 1e-5, "bias gradient");
  }
  expect_close(fused->running_mean, plain->running_mean, 1e-5, 1e-6, "running mean");
  expect_close(fused->running_var, plain->running_var, 1e-5, 1e-6, "running variance");
  EXPECT_EQ(fused->num_batches_tracked.item<std::int64_t>(), plain->num_batches_tracked.item<std::int64_t>());
}

TEST(NormPool, EqualsTheLayersOnRandomInputs) {
  torch::manual_seed(1);
  expect_same_as_layers(torch::randn({4, 8, 28, 28}));
  expect_same_as_layers(torch::randn({2, 5, 15, 13}));              // odd sizes: a last row and column in no window
  expect_same_as_layers(torch::randn({3, 4, 8, 8}) * 3 + 7);        // a mean far from zero
  expect_same_as_layers(torch::randn({2, 3, 6, 6}), c10::nullopt);  // cumulative running average
}

TEST(NormPool, EqualsTheLayersWithTies) {
  torch::manual_seed(2);
  // Small integers repeat within windows, and half the normalized values are ReLU zeros.
  expect_same_as_layers(torch::randint(0, 3, {4, 8, 16, 16}).to(torch::kFloat));
}

TEST(NormPool, GradientReachesOnlyTheWindowMaxima) {
  // With weight 1, bias 0 and the batch normalized per channel, the window's maximum is the
  // largest input: a position that is never a maximum gets only batch norm's mean terms.
  torch::manual_seed(3);
  auto bn = make_bn(2, 0.1);
  {
    torch::NoGradGuard no_grad;
    bn->weight.fill_(1);
    bn->bias.fill_(0);
  }
  auto x = torch::randn({2, 2, 4, 4});
  {
    torch::NoGradGuard no_grad;
    x.select(2, 0).select(2, 0).fill_(-100);  // (0, 0) of the first window of each row pair: never the maximum
  }
  x.requires_grad_();
  auto plain_x = x.detach().clone().requires_grad_();
  auto plain = make_bn(2, 0.1);
  {
    torch::NoGradGuard no_grad;
    plain->weight.fill_(1);
    plain->bias.fill_(0);
  }
  const auto g = torch::ones({2, 2, 2, 2});
  batch_norm_relu_pool(x, *bn).backward(g);
  torch::max_pool2d(torch::relu(plain->forward(plain_x)), {2, 2}).backward(g);
  expect_close(x.grad(), plain_x.grad(), 1e-4, 1e-5, "input gradient");
}

TEST(NormPool, EqualsTheLayersOnBfloat16) {
  // What a convolution gives under CPU autocast: the layers normalize in float with float
  // parameters and round to bfloat16; the fused operator too (its statistics summed in double).
  torch::manual_seed(7);
  for (const auto& shape : {std::vector<std::int64_t>{4, 8, 28, 28}, std::vector<std::int64_t>{2, 5, 15, 13}}) {
    const auto input = torch::randn(shape).to(torch::kBFloat16);
    auto [fused, plain] = twin_norms(shape[1], 0.1);
    auto a = input.clone().requires_grad_(), b = input.clone().requires_grad_();
    ASSERT_TRUE(fused_norm_pool_applies(a, *fused));
    const auto got = batch_norm_relu_pool(a, *fused);
    const auto want = torch::max_pool2d(torch::relu(plain->forward(b)), {2, 2});
    ASSERT_EQ(got.scalar_type(), torch::kBFloat16);
    // One bfloat16 rounding step (2^-8 relative) apart at most.
    expect_close(got.to(torch::kFloat), want.to(torch::kFloat), 1.0 / 128, 1e-2, "bfloat16 output");
    const auto g = torch::randn(want.sizes()).to(torch::kBFloat16);
    got.backward(g);
    want.backward(g);
    ASSERT_EQ(a.grad().scalar_type(), torch::kBFloat16);
    expect_close(a.grad().to(torch::kFloat), b.grad().to(torch::kFloat), 1.0 / 64, 2e-2, "bfloat16 input gradient");
    expect_close(fused->weight.grad(), plain->weight.grad(), 1e-2, 1e-2, "weight gradient");
    expect_close(fused->bias.grad(), plain->bias.grad(), 1e-2, 1e-2, "bias gradient");
    expect_close(fused->running_var, plain->running_var, 1e-3, 1e-4, "running variance");
  }
}

void expect_portable_loops_same_bits(torch::ScalarType dtype, std::int64_t h, std::int64_t w) {
  // The AVX-512 window loops and sums (where the CPU has them) against the portable ones.
  torch::manual_seed(5);
  const auto input =
      torch::cat({torch::randn({3, 6, h, w}), torch::zeros({1, 6, h, w})}).to(dtype);  // ties at zero too
  const auto g = torch::randn({4, 6, h / 2, w / 2}).to(dtype);
  std::vector<torch::Tensor> got[2];
  for (int scalar = 0; scalar < 2; ++scalar) {
    kernels::use_scalar_loops(scalar == 1);
    torch::manual_seed(6);
    auto bn = make_bn(6, 0.1);
    auto x = input.clone().requires_grad_();
    const auto out = batch_norm_relu_pool(x, *bn);
    out.backward(g);
    got[scalar] = {out, x.grad(), bn->weight.grad(), bn->bias.grad(), bn->running_mean, bn->running_var};
  }
  kernels::use_scalar_loops(false);
  for (std::size_t i = 0; i < got[0].size(); ++i) EXPECT_TRUE(torch::equal(got[0][i], got[1][i])) << "tensor " << i;
}

TEST(NormPool, PortableLoopsGiveTheSameBits) {
  // 35 wide: windows in blocks of 16 and 1; 23 wide: a block of 11 (a partly masked second half).
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    expect_portable_loops_same_bits(dtype, 29, 35);
    expect_portable_loops_same_bits(dtype, 28, 23);
  }
}

TEST(NormPool, DoesNotApplyOutsideFloatTrainingOnCpu) {
  auto bn = make_bn(4, 0.1);
  const auto x = torch::randn({2, 4, 8, 8});
  EXPECT_TRUE(fused_norm_pool_applies(x, *bn));
  EXPECT_FALSE(fused_norm_pool_applies(x.to(torch::kDouble), *bn));
  EXPECT_FALSE(fused_norm_pool_applies(x.to(torch::kHalf), *bn));
  EXPECT_FALSE(fused_norm_pool_applies(x.contiguous(torch::MemoryFormat::ChannelsLast), *bn));
  EXPECT_FALSE(fused_norm_pool_applies(torch::randn({2, 4, 1, 8}), *bn));
  bn->eval();
  EXPECT_FALSE(fused_norm_pool_applies(x, *bn));
}

// The CNN with fused stages against the same weights run layer by layer (features, then the
// head on the flattened output): logits, every parameter's gradient, the running statistics.
void expect_cnn_matches_layers(std::int64_t checkpoint_every) {
  ModelConfig c;
  c.name = "cnn";
  c.channels = {8, 16, 16};
  c.fc_width = 32;
  c.checkpoint_every = checkpoint_every;
  const InputSpec in{{3, 20, 20}, 5};
  torch::manual_seed(4);
  auto fused = build_model(c, in);
  torch::manual_seed(4);
  auto plain = build_model(c, in);
  const auto x = torch::randn({6, 3, 20, 20});
  const auto out = fused->forward(x);
  auto& seq = *plain->named_children()["features"]->as<torch::nn::SequentialImpl>();
  auto& head = *plain->named_children()["head"]->as<torch::nn::SequentialImpl>();
  const auto want = head.forward(seq.forward(x).flatten(1));
  expect_close(out, want, 1e-4, 1e-5, "logits");
  out.square().sum().backward();
  want.square().sum().backward();
  const auto a = fused->named_parameters(), b = plain->named_parameters();
  for (const auto& p : a) expect_close(p.value().grad(), b[p.key()].grad(), 1e-3, 1e-4, p.key().c_str());
  const auto ab = fused->named_buffers(), bb = plain->named_buffers();
  for (const auto& p : ab)
    expect_close(p.value().to(torch::kDouble), bb[p.key()].to(torch::kDouble), 1e-5, 1e-6, p.key().c_str());
  // Evaluation runs the model's own layers: bit for bit what they compute one by one.
  fused->eval();
  torch::NoGradGuard no_grad;
  auto& own = *fused->named_children()["features"]->as<torch::nn::SequentialImpl>();
  auto& own_head = *fused->named_children()["head"]->as<torch::nn::SequentialImpl>();
  EXPECT_TRUE(torch::equal(fused->forward(x), own_head.forward(own.forward(x).flatten(1))));
}

TEST(NormPool, CnnEqualsItsLayers) {
  expect_cnn_matches_layers(0);
}

TEST(NormPool, SwitchedOffTheCnnRunsItsLayers) {
  // model.fused_kernels=false: LibTorch's layers, bit for bit, in training too.
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4, 8};
  c.fc_width = 16;
  c.fused_kernels = false;
  auto m = build_model(c, InputSpec{{1, 12, 12}, 3});
  const auto x = torch::randn({4, 1, 12, 12});
  auto& seq = *m->named_children()["features"]->as<torch::nn::SequentialImpl>();
  auto& head = *m->named_children()["head"]->as<torch::nn::SequentialImpl>();
  const auto want = head.forward(seq.forward(x).flatten(1));
  EXPECT_TRUE(torch::equal(m->forward(x), want));
}
TEST(NormPool, CheckpointedCnnEqualsItsLayers) {
  expect_cnn_matches_layers(1);
}

}  // namespace
}  // namespace hpctrain
