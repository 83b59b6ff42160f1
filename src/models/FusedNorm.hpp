#pragma once
// What the fused batch-norm operators (models/NormPool.hpp, models/NormAct.hpp) share around
// their loops: the tensors' shapes and element pointers for the kernels, the channels spread
// over LibTorch's threads, the batch's statistics with the running statistics updated as
// BatchNorm2d's forward updates them, and batch norm's backward constants.
#include <torch/torch.h>

#include <optional>
#include <type_traits>

#include "models/KernelPlanes.hpp"

namespace hpctrain::fused {

inline kernels::Planes planes(const torch::Tensor& x) {
  return {x.size(0), x.size(1), x.size(2), x.size(3)};
}

// The kernels' element pointer: float, or bfloat16 as its 16 bits; null for an undefined tensor.
template <typename T>
T* ptr(const torch::Tensor& t) {
  if (!t.defined()) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    return t.data_ptr<float>();
  } else {
    return reinterpret_cast<T*>(t.data_ptr<at::BFloat16>());
  }
}

// Runs f(T{}, c0, c1) over ranges of `t`'s channels on LibTorch's intra-op threads, T the
// kernels' element type for t's dtype (float, or bfloat16 as its 16 bits).
template <typename F>
void over_channels(const torch::Tensor& t, F&& f) {
  const auto run = [&](auto element) {
    at::parallel_for(0, t.size(1), 1, [&](std::int64_t c0, std::int64_t c1) { f(element, c0, c1); });
  };
  if (t.scalar_type() == torch::kBFloat16) {
    run(kernels::Bf16{});
  } else {
    run(float{});
  }
}

// An optional input of a custom autograd function: an undefined tensor may not be one.
using Maybe = std::optional<torch::Tensor>;
inline Maybe maybe(const torch::Tensor& t) {
  return t.defined() ? Maybe(t) : std::nullopt;
}

// A BatchNorm2d's running statistics as its next training forward updates them (its batch
// count advanced; momentum the cumulative average's where the layer has none); undefined
// tensors where it tracks none.
struct RunningStats {
  torch::Tensor mean, var;
  double momentum = 0;
};
RunningStats next_running_stats(torch::nn::BatchNorm2dImpl& bn);

// The batch's statistics of x [N, C, H, W] over all but C, and batch norm's affine form
// x * alpha + beta (LibTorch's order); the running statistics updated when defined.
struct BatchStats {
  torch::Tensor mean, invstd, alpha, beta;  // float, [C]
};
BatchStats batch_stats(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                       const RunningStats& running, double eps);

// Batch norm's backward from the per-channel sums Σ g and Σ g (x - mean) over `count` values:
// the input gradient's constants (dx = ((g - (x - mean) * k) - mean_g) * scale) and the weight
// and bias gradients.
struct NormGrads {
  torch::Tensor k, mean_g, scale, dweight, dbias;
};
NormGrads norm_grads(const torch::Tensor& sum_g, const torch::Tensor& sum_gx, const torch::Tensor& invstd,
                     const torch::Tensor& weight, double count);

}  // namespace hpctrain::fused
