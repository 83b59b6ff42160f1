// models/Pooling: the channels-last-forward max pooling computes exactly what LibTorch's
// NCHW max_pool2d computes: outputs, and gradients through the saved indices, including
// windows with ties (ReLU zeros, repeated integers) and the ResNet stem's padded 3x3/2.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/Pooling.hpp"

namespace hpctrain {
namespace {

void expect_same(const torch::Tensor& input, std::int64_t kernel, std::int64_t stride, std::int64_t padding) {
  auto a = input.clone().requires_grad_();
  auto b = input.clone().requires_grad_();
  const auto want = torch::max_pool2d(a, {kernel, kernel}, {stride, stride}, {padding, padding});
  const auto got = MaxPool(kernel, stride, padding)->forward(b);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(got.is_contiguous());
  EXPECT_TRUE(torch::equal(got, want));
  const auto g = torch::randn(want.sizes());
  want.backward(g);
  got.backward(g);
  EXPECT_TRUE(torch::equal(a.grad(), b.grad()));
}

TEST(MaxPool, EqualsLibTorchOnRandomInputs) {
  torch::manual_seed(1);
  expect_same(torch::randn({4, 8, 28, 28}), 2, 2, 0);
  expect_same(torch::randn({3, 16, 14, 14}), 2, 2, 0);
  expect_same(torch::randn({2, 5, 15, 13}), 2, 2, 0);  // odd sizes: the last row and column dropped
  expect_same(torch::randn({2, 8, 32, 32}), 3, 2, 1);  // the ResNet ImageNet stem
}

TEST(MaxPool, EqualsLibTorchWithTies) {
  torch::manual_seed(2);
  // After a ReLU about half the values are zero; small integers repeat within windows.
  expect_same(torch::relu(torch::randn({4, 8, 28, 28})), 2, 2, 0);
  expect_same(torch::randint(0, 3, {4, 8, 16, 16}).to(torch::kFloat), 2, 2, 0);
  expect_same(torch::randint(0, 3, {2, 8, 16, 16}).to(torch::kFloat), 3, 2, 1);
}

TEST(MaxPool, EqualsLibTorchInEvalAndOnOtherLayouts) {
  torch::manual_seed(3);
  const auto x = torch::randn({2, 8, 10, 10});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(MaxPool(2)->forward(x), torch::max_pool2d(x, {2, 2})));
  const auto cl = x.contiguous(torch::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(torch::equal(MaxPool(2)->forward(cl), torch::max_pool2d(x, {2, 2})));
  const auto one = torch::randn({2, 1, 10, 10});
  EXPECT_TRUE(torch::equal(MaxPool(2)->forward(one), torch::max_pool2d(one, {2, 2})));
}

}  // namespace
}  // namespace hpctrain
