// models/FusedMlp: the MLP operator fc2(gelu_tanh(fc1(x))) with its own backward against ATen's
// linear, gelu and autograd: outputs and every gradient, in float32 and under bfloat16 autocast
// (gradients back in each input's type), with and without a gradient for x. On CPUs the
// operator's steps are ATen's operators, so it must give autograd's numbers; on a GPU its
// cuBLASLt epilogues (models/GemmEpilogue) are checked by `hpctrain bench kernels`.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/FusedMlp.hpp"
#include "models/GemmEpilogue.hpp"

namespace hpctrain {
namespace {

struct Result {
  torch::Tensor y, dx, dw1, db1, dw2, db2;
};

using Mlp = torch::Tensor (*)(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                              const torch::Tensor&);

// `frozen`: inputs 1..4 (w1, b1, w2, b2) from this index on take no gradient.
Result run(Mlp mlp, const std::vector<torch::Tensor>& inputs, bool x_grad, bool autocast, std::size_t frozen = 5) {
  std::vector<torch::Tensor> v;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    v.push_back(inputs[i].detach().clone().requires_grad_(i == 0 ? x_grad : i < frozen));
  }
  torch::Tensor y;
  {
    at::autocast::set_autocast_enabled(at::kCPU, autocast);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    y = mlp(v[0], v[1], v[2], v[3], v[4]);
    at::autocast::set_autocast_enabled(at::kCPU, false);
    at::autocast::clear_cache();
  }
  torch::manual_seed(3);
  (y.to(torch::kFloat) * torch::randn(y.sizes())).sum().backward();
  return {y.detach(), v[0].grad(), v[1].grad(), v[2].grad(), v[3].grad(), v[4].grad()};
}

std::vector<torch::Tensor> inputs(std::int64_t d, std::int64_t hidden, std::int64_t out) {
  torch::manual_seed(5);
  return {torch::randn({3, 7, d}), 0.3 * torch::randn({hidden, d}), 0.1 * torch::randn({hidden}),
          0.3 * torch::randn({out, hidden}), 0.1 * torch::randn({out})};
}

void expect_equal(const torch::Tensor& got, const torch::Tensor& want, const char* what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_TRUE(torch::equal(got, want)) << what << ": max difference "
                                       << (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
}

void compare(bool x_grad, bool autocast, std::int64_t hidden = 40, std::size_t frozen = 5) {
  const auto in = inputs(24, hidden, 24);
  const auto fused = run(mlp_gelu_tanh, in, x_grad, autocast, frozen);
  const auto aten = run(mlp_gelu_tanh_unfused, in, x_grad, autocast, frozen);
  expect_equal(fused.y, aten.y, "y");
  expect_equal(fused.dx, aten.dx, "dx");
  expect_equal(fused.dw1, aten.dw1, "dw1");
  expect_equal(fused.db1, aten.db1, "db1");
  expect_equal(fused.dw2, aten.dw2, "dw2");
  expect_equal(fused.db2, aten.db2, "db2");
}

TEST(FusedMlp, Float32GivesAutogradsNumbers) {
  compare(true, false);
}

TEST(FusedMlp, WithoutAGradientForX) {
  compare(false, false);
}

TEST(FusedMlp, UnderBfloat16AutocastGradientsComeBackInEachInputsType) {
  compare(true, true);
  const auto fused = run(mlp_gelu_tanh, inputs(24, 40, 24), true, true);
  EXPECT_EQ(fused.y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(fused.dx.scalar_type(), torch::kFloat);
  EXPECT_EQ(fused.dw1.scalar_type(), torch::kFloat);
}

TEST(FusedMlp, AHiddenWidthThatIsNoMultipleOfEight) {
  compare(true, false, 13);
}

// Frozen layers (fine-tuning the first only, or neither) get no gradient, the rest autograd's.
TEST(FusedMlp, FrozenParametersGetNoGradient) {
  compare(true, false, 40, 3);
  compare(true, false, 40, 1);
  compare(false, false, 40, 3);
}

// The GELU is the tanh approximation: it differs from the exact one.
TEST(FusedMlp, IsTheTanhApproximation) {
  const auto in = inputs(8, 16, 8);
  const auto exact = torch::linear(torch::gelu(torch::linear(in[0], in[1], in[2])), in[3], in[4]);
  EXPECT_FALSE(torch::allclose(mlp_gelu_tanh(in[0], in[1], in[2], in[3], in[4]), exact, 0, 1e-7));
}

// In a CUDA build, the cuBLASLt entry points are found in the libcublasLt LibTorch loaded.
TEST(FusedMlp, CublasLtIsFoundWhereLibTorchHasCuda) {
  EXPECT_EQ(gemm_epilogues_available(), static_cast<bool>(HPCTRAIN_WITH_CUDA));
  EXPECT_FALSE(mlp_gelu_fused_on(torch::randn({2, 8}), torch::randn({8, 8}), torch::randn({8}), torch::randn({8, 8}),
                                 torch::randn({8})))
      << "the cuBLASLt path is for GPUs";
}

}  // namespace
}  // namespace hpctrain
