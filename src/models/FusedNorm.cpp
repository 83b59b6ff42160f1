#include "models/FusedNorm.hpp"

#include <ATen/Parallel.h>

#include <algorithm>

namespace hpctrain::fused {

RunningStats next_running_stats(torch::nn::BatchNorm2dImpl& bn) {
  RunningStats r;
  if (!bn.options.track_running_stats()) return r;
  torch::NoGradGuard no_grad;
  bn.num_batches_tracked += 1;
  const auto& m = bn.options.momentum();
  r.momentum = m ? *m : 1.0 / static_cast<double>(bn.num_batches_tracked.item<std::int64_t>());
  r.mean = bn.running_mean;
  r.var = bn.running_var;
  return r;
}

BatchStats batch_stats(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                       const RunningStats& running, double eps) {
  const auto s = planes(x);
  const auto count = static_cast<double>(s.n * s.plane());
  auto mean = torch::empty({s.c}, torch::kDouble), squares = torch::empty({s.c}, torch::kDouble);
  over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
    using T = decltype(element);
    kernels::channel_moments(ptr<T>(x), s, c0, c1, mean.data_ptr<double>(), squares.data_ptr<double>());
  });
  BatchStats b;
  b.invstd = (squares / count + eps).rsqrt().to(torch::kFloat);
  b.mean = mean.to(torch::kFloat);
  b.alpha = (b.invstd * weight).contiguous();
  b.beta = (bias - b.mean * b.alpha).contiguous();
  if (running.mean.defined()) {
    torch::NoGradGuard no_grad;
    running.mean.mul_(1 - running.momentum).add_(b.mean, running.momentum);
    running.var.mul_(1 - running.momentum)
        .add_((squares / std::max(count - 1, 1.0)).to(torch::kFloat), running.momentum);
  }
  return b;
}

NormGrads norm_grads(const torch::Tensor& sum_g, const torch::Tensor& sum_gx, const torch::Tensor& invstd,
                     const torch::Tensor& weight, double count) {
  const auto dot = sum_gx.to(torch::kFloat), total = sum_g.to(torch::kFloat);
  // LibTorch's batch-norm backward: dx = ((dy - (x - mean) * k) - mean(dy)) * invstd * w.
  return {(dot * invstd * invstd / count).contiguous(), (total / count).contiguous(), (invstd * weight).contiguous(),
          dot * invstd, total};
}

}  // namespace hpctrain::fused
