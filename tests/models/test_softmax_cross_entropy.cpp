// models/SoftmaxCrossEntropy: the fused softmax cross-entropy against ATen's cross_entropy on
// float32 logits (what training computed before), through its CPU reference
// (models/LossKernels): the summed loss and the logits' gradient, float32 and bfloat16 logits,
// many classes and one. (The CUDA kernel is checked by `hpctrain bench kernels` on a GPU.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "models/SoftmaxCrossEntropy.hpp"

namespace hpctrain {
namespace {

void compare(c10::ScalarType type, std::int64_t rows, std::int64_t classes, double tol) {
  torch::manual_seed(3);
  const auto z0 = (3 * torch::randn({rows, classes})).to(type);
  const auto t = torch::randint(0, classes, {rows});
  auto z1 = z0.detach().requires_grad_(), z2 = z0.detach().requires_grad_();
  const auto fused = softmax_cross_entropy_sum(z1, t), aten = softmax_cross_entropy_sum_unfused(z2, t);
  ASSERT_EQ(fused.scalar_type(), torch::kFloat);
  ASSERT_EQ(fused.dim(), 0);
  EXPECT_NEAR(fused.item<double>(), aten.item<double>(), tol * std::abs(aten.item<double>()));
  // A weight on the sum, as the step's 1/batch and loss scale are.
  (fused * 0.25).backward();
  (aten * 0.25).backward();
  ASSERT_EQ(z1.grad().scalar_type(), type);
  const auto diff = (z1.grad().to(torch::kDouble) - z2.grad().to(torch::kDouble)).abs().max().item<double>();
  EXPECT_LE(diff, tol) << "gradient";
}

TEST(SoftmaxCrossEntropy, Float32MatchesAten) {
  compare(torch::kFloat, 37, 10, 1e-5);
}

TEST(SoftmaxCrossEntropy, ManyClasses) {
  compare(torch::kFloat, 8, 5000, 1e-5);
}

TEST(SoftmaxCrossEntropy, OneClassHasZeroLoss) {
  compare(torch::kFloat, 4, 1, 1e-6);
}

// bfloat16 logits are read as they are (ATen's path casts them to float first: the same values).
TEST(SoftmaxCrossEntropy, BFloat16LogitsMatchAten) {
  compare(torch::kBFloat16, 37, 10, 1e-2);
}

TEST(SoftmaxCrossEntropy, LargeLogitsStayFinite) {
  const auto z = torch::tensor({{1000.f, 0.f, -1000.f}, {-1000.f, 1000.f, 1000.f}});
  const auto t = torch::tensor({0, 2}, torch::kLong);
  const auto fused = softmax_cross_entropy_sum(z, t), aten = softmax_cross_entropy_sum_unfused(z, t);
  EXPECT_NEAR(fused.item<double>(), aten.item<double>(), 1e-3);
  EXPECT_TRUE(std::isfinite(fused.item<double>()));
}

TEST(SoftmaxCrossEntropy, TargetOutOfRangeIsNaNNotAStrayRead) {
  const auto loss = softmax_cross_entropy_sum(torch::zeros({2, 3}), torch::tensor({0, 3}, torch::kLong));
  EXPECT_TRUE(std::isnan(loss.item<double>()));
}

TEST(SoftmaxCrossEntropy, Int32TargetsAreTaken) {
  const auto z = torch::randn({5, 4});
  const auto t = torch::tensor({0, 1, 2, 3, 0}, torch::kInt);
  EXPECT_NEAR(softmax_cross_entropy_sum(z, t).item<double>(),
              softmax_cross_entropy_sum_unfused(z, t.to(torch::kLong)).item<double>(), 1e-4);
}

TEST(SoftmaxCrossEntropy, NotFusedOnTheCpuInTraining) {
  EXPECT_FALSE(softmax_cross_entropy_fused_on(torch::randn({2, 4}), torch::zeros({2}, torch::kLong)));
}

}  // namespace
}  // namespace hpctrain
