#pragma once
// What the fused batch-norm operators' tests share (test_norm_pool.cpp, test_norm_act.cpp):
// an element-wise closeness check that names the worst element, and a batch norm with
// non-trivial affine parameters.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace hpctrain::testing {

// |a - b| <= atol + rtol * |b| element-wise (compared in double), the worst element in the failure message.
inline void expect_close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol,
                         const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const auto a64 = a.to(torch::kDouble), b64 = b.to(torch::kDouble);
  const auto excess = (a64 - b64).abs() - (atol + rtol * b64.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0) << what << ": max |a - b| = " << (a64 - b64).abs().max().item<double>()
                                              << " (atol " << atol << ", rtol " << rtol << ")";
}

// BatchNorm2d with weight in [0.5, 1.5] and bias in [-0.5, 0.5] (from LibTorch's generator).
inline torch::nn::BatchNorm2d make_bn(std::int64_t channels, c10::optional<double> momentum) {
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(channels).momentum(momentum));
  torch::NoGradGuard no_grad;
  bn->weight.uniform_(0.5, 1.5);
  bn->bias.uniform_(-0.5, 0.5);
  return bn;
}

// Two such layers with the same parameters: one for the fused operator, one for the layers.
struct TwinNorms {
  torch::nn::BatchNorm2d fused, plain;
};
inline TwinNorms twin_norms(std::int64_t channels, c10::optional<double> momentum) {
  TwinNorms t{make_bn(channels, momentum), make_bn(channels, momentum)};
  torch::NoGradGuard no_grad;
  t.plain->weight.copy_(t.fused->weight);
  t.plain->bias.copy_(t.fused->bias);
  return t;
}

}  // namespace hpctrain::testing
