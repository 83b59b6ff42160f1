#include "models/Normalization.hpp"

#include <vector>

#include "util/Error.hpp"

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Every dimension but the channels'.
std::vector<std::int64_t> reduced_dims(const torch::Tensor& x) {
  std::vector<std::int64_t> dims{0};
  for (std::int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

// [C] -> broadcastable against x: [1, C, 1, ...].
std::vector<std::int64_t> channel_view(const torch::Tensor& x) {
  std::vector<std::int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
  shape[1] = -1;
  return shape;
}

// Sums the per-channel `parts` (each [C], on x's device) over the group in one reduction of
// float64 values on that device, with `extra` ([E] float64, same device, or undefined)
// appended. Returns the summed parts in float32, then the summed extras. Nothing is read on
// the host: on GPUs with NCCL the sums stay on the device, ordered on the compute stream.
std::vector<torch::Tensor> group_sum(const GroupSum& group, const std::vector<torch::Tensor>& parts,
                                     const torch::Tensor& extra = {}) {
  auto packed = torch::cat(parts).to(torch::kDouble);
  if (extra.defined()) packed = torch::cat({packed, extra});
  packed = packed.contiguous();
  group(packed);
  const auto c = parts[0].numel();
  std::vector<torch::Tensor> summed;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const auto begin = static_cast<std::int64_t>(i) * c;
    summed.push_back(packed.slice(0, begin, begin + c).to(torch::kFloat));
  }
  if (extra.defined()) summed.push_back(packed.slice(0, static_cast<std::int64_t>(parts.size()) * c));
  return summed;
}

struct SyncBatchNormFunction : torch::autograd::Function<SyncBatchNormFunction> {
  static variable_list forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor weight, torch::Tensor bias,
                               SyncBatchNormImpl* bn) {
    const auto dims = reduced_dims(x);
    const auto xf = x.to(torch::kFloat);  // statistics in float32, whatever autocast gave
    const auto c = xf.size(1);
    // Two passes over the group, as numerics want: the global mean from the sums, then the
    // global variance from the squared deviations from it (no E[x²] - E[x]² cancellation).
    const auto n = xf.numel() / c;
    const auto summed = group_sum(bn->group, {xf.sum(dims)},
                                  torch::full({1}, static_cast<double>(n), xf.options().dtype(torch::kDouble)));
    // Values per channel over the group, [1] on the device (float32, the statistics' type).
    const auto total = summed[1].to(torch::kFloat);
    const auto mean = summed[0] / total;
    // Only a rank with a single value per channel needs the group's count, and only on the
    // host is it read: on a GPU the read would wait on NCCL without comm.nccl_timeout's
    // deadline. (A GPU group with one value per channel in all gets zero variance.)
    if (n < 2 && !xf.is_cuda() && total.item<double>() < 2) {
      throw ConfigError("model.norm=sync_batch: batch norm needs more than one value per channel over the group");
    }
    // Bessel's correction for the running variance, from the float64 count (exact).
    const auto unbias = (summed[1] / (summed[1] - 1).clamp_min(1)).to(torch::kFloat);
    // x - mean through batch norm's evaluation kernel (unit variance, no eps): one fused
    // pass, where a broadcast subtraction over [N, C, H, W] is several times slower on CPUs.
    const auto ones = torch::ones({c}, mean.options());
    const auto centered = torch::batch_norm(xf, {}, {}, mean, ones, false, 0.0, 0.0, true);
    const auto var = group_sum(bn->group, {(centered * centered).sum(dims)})[0] / total;
    {
      torch::NoGradGuard no_grad;
      const double m = bn->momentum;
      bn->running_mean.mul_(1 - m).add_(mean.to(bn->running_mean.dtype()), m);
      bn->running_var.mul_(1 - m).add_((var * unbias).to(bn->running_var.dtype()), m);
      bn->num_batches_tracked.add_(1);
    }
    ctx->saved_data["bn"] = reinterpret_cast<std::int64_t>(bn);
    ctx->saved_data["dtype"] = static_cast<std::int64_t>(x.scalar_type());
    ctx->save_for_backward({centered, var, weight, total});
    // Normalizing with given statistics is the same kernel: one fused pass.
    const auto zeros = torch::zeros({c}, mean.options());
    const auto y = torch::batch_norm(centered, weight.to(torch::kFloat), bias.to(torch::kFloat), zeros, var,
                                     /*training=*/false, 0.0, bn->eps, /*cudnn_enabled=*/true);
    return {y.to(x.scalar_type())};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* bn = reinterpret_cast<SyncBatchNormImpl*>(ctx->saved_data["bn"].toInt());
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const auto saved = ctx->get_saved_variables();
    const auto &centered = saved[0], &var = saved[1], &weight = saved[2], &total = saved[3];
    const auto view = channel_view(centered);
    const auto dy = grad_outputs[0].to(torch::kFloat).contiguous(centered.suggest_memory_format());
    // Batch norm's backward with fixed statistics, one fused kernel: dy·w·invstd for the
    // input, and this rank's Σdy·x̂ and Σdy for the weight and bias (the data-parallel
    // reduction sums those over the ranks).
    auto [dx, grad_weight, grad_bias] =
        at::native_batch_norm_backward(dy, centered, weight.to(torch::kFloat), torch::zeros_like(var), var, {}, {},
                                       /*train=*/false, bn->eps, {true, true, true});
    // The input's gradient also depends on every sample in the global batch through the mean
    // and the variance: dx = w·invstd·(dy - mean(dy) - x̂·mean(dy·x̂)), means over the group.
    const auto summed = group_sum(bn->group, {grad_bias, grad_weight});
    const auto invstd = torch::rsqrt(var + bn->eps);
    const auto scale = weight.to(torch::kFloat) * invstd;
    dx.sub_((scale * summed[0] / total).view(view));
    dx.addcmul_(centered, (scale * invstd * summed[1] / total).view(view), -1.0);
    return {dx.to(dtype), grad_weight.to(weight.scalar_type()), grad_bias.to(weight.scalar_type()), torch::Tensor()};
  }
};

}  // namespace

SyncBatchNormImpl::SyncBatchNormImpl(std::int64_t channels, GroupSum group_sum, double eps_, double momentum_)
    : group(std::move(group_sum)), eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

torch::Tensor SyncBatchNormImpl::forward(const torch::Tensor& x) {
  if (!is_training() || !group) {
    // Evaluation, or a single rank: what BatchNorm computes (LibTorch's kernels).
    if (is_training()) {
      torch::NoGradGuard no_grad;
      num_batches_tracked.add_(1);
    }
    return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps,
                             /*cudnn_enabled=*/true);
  }
  return SyncBatchNormFunction::apply(x, weight, bias, this)[0];
}

torch::nn::AnyModule norm_layer(const std::string& kind, std::int64_t channels, int spatial, const GroupSum& group) {
  if (kind == "batch") {
    if (spatial == 2) return torch::nn::AnyModule(torch::nn::BatchNorm2d(channels));
    return torch::nn::AnyModule(torch::nn::BatchNorm1d(channels));
  }
  if (kind == "sync_batch") return torch::nn::AnyModule(SyncBatchNorm(channels, group));
  if (kind == "layer") {
    if (spatial == 0) return torch::nn::AnyModule(torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels})));
    return torch::nn::AnyModule(torch::nn::GroupNorm(1, channels));
  }
  if (kind == "none") return torch::nn::AnyModule(torch::nn::Identity());
  throw ConfigError("model.norm: unknown normalization \"" + kind + "\" (batch, sync_batch, layer, none)");
}

}  // namespace hpctrain
