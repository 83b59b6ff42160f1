#include "models/NormAct.hpp"

#include <ATen/record_function.h>

#include "models/FusedNorm.hpp"
#include "models/NormActKernels.hpp"

namespace hpctrain {
namespace {

using fused::maybe;
using fused::Maybe;
using fused::over_channels;
using fused::ptr;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct NormAct : torch::autograd::Function<NormAct> {
  // x [N, C, H, W] -> relu(bn(x) + residual); running statistics updated in place when defined.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const Maybe& maybe_residual, const Maybe& running_mean,
                               const Maybe& running_var, double momentum, double eps) {
    const auto residual = maybe_residual.value_or(torch::Tensor());
    // Named in profiles (run.profile_steps, analysis/op_profile.py): its loops are no ATen operator.
    RECORD_FUNCTION("hpctrain::batch_norm_act",
                    residual.defined() ? std::vector<c10::IValue>({x, residual}) : std::vector<c10::IValue>({x}));
    const auto s = fused::planes(x);
    const auto stats = fused::batch_stats(
        x, weight, bias, {running_mean.value_or(torch::Tensor()), running_var.value_or(torch::Tensor()), momentum},
        eps);
    auto out = torch::empty_like(x);
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::norm_act(ptr<T>(x), ptr<T>(residual), s, c0, c1, stats.alpha.data_ptr<float>(),
                        stats.beta.data_ptr<float>(), ptr<T>(out));
    });
    ctx->save_for_backward({x, weight, out});
    ctx->saved_data["mean"] = stats.mean;
    ctx->saved_data["invstd"] = stats.invstd;
    ctx->saved_data["residual"] = residual.defined();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &out = saved[2];
    const bool residual = ctx->saved_data["residual"].toBool();
    const auto dres = residual && ctx->needs_input_grad(3) ? torch::empty_like(x) : torch::Tensor();
    RECORD_FUNCTION("hpctrain::batch_norm_act_backward",
                    dres.defined() ? std::vector<c10::IValue>({grads[0], dres}) : std::vector<c10::IValue>({grads[0]}));
    const auto g = grads[0].to(x.scalar_type()).contiguous();
    const auto mean = ctx->saved_data["mean"].toTensor(), invstd = ctx->saved_data["invstd"].toTensor();
    const auto s = fused::planes(x);
    auto sum_g = torch::empty({s.c}, torch::kDouble), sum_gx = torch::empty({s.c}, torch::kDouble);
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::norm_act_sums(ptr<T>(g), ptr<T>(out), ptr<T>(x), s, c0, c1, mean.data_ptr<float>(),
                             sum_g.data_ptr<double>(), sum_gx.data_ptr<double>(), ptr<T>(dres));
    });
    const auto norm = fused::norm_grads(sum_g, sum_gx, invstd, weight, static_cast<double>(s.n * s.plane()));
    torch::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty_like(x);
      over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
        using T = decltype(element);
        kernels::norm_act_input_grad(ptr<T>(x), ptr<T>(g), ptr<T>(out), s, c0, c1, mean.data_ptr<float>(),
                                     norm.mean_g.data_ptr<float>(), norm.k.data_ptr<float>(),
                                     norm.scale.data_ptr<float>(), ptr<T>(dx));
      });
    }
    const auto dweight = ctx->needs_input_grad(1) ? norm.dweight : torch::Tensor();
    const auto dbias = ctx->needs_input_grad(2) ? norm.dbias : torch::Tensor();
    return {dx, dweight, dbias, dres, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_norm_act_applies(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn,
                            const torch::Tensor& residual) {
  // bfloat16 inputs are what a convolution gives under CPU autocast (precision.mode=bf16);
  // the layers then normalize in float with float parameters and return bfloat16, as here.
  const auto dtype = x.scalar_type();
  const bool inputs = x.device().is_cpu() && (dtype == torch::kFloat || dtype == torch::kBFloat16) && x.dim() == 4 &&
                      x.is_contiguous() && x.numel() > 0 && x.numel() / x.size(1) > 1;  // > 1 value per channel
  const bool layer = bn.is_training() && bn.options.affine() && bn.weight.scalar_type() == torch::kFloat &&
                     bn.weight.size(0) == (x.dim() > 1 ? x.size(1) : -1);
  const bool skip = !residual.defined() || (residual.sizes() == x.sizes() && residual.scalar_type() == dtype &&
                                            residual.device() == x.device() && residual.is_contiguous());
  return inputs && layer && skip;
}

torch::Tensor batch_norm_act(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& residual) {
  const auto running = fused::next_running_stats(bn);
  return NormAct::apply(x, bn.weight, bn.bias, maybe(residual), maybe(running.mean), maybe(running.var),
                        running.momentum, bn.options.eps());
}

torch::Tensor run_fusing_norm_act(torch::nn::Sequential& seq, torch::Tensor x, const torch::Tensor& residual) {
  const auto n = seq->size();
  for (std::size_t i = 0; i < n; ++i) {
    auto* bn = seq->ptr(i)->as<torch::nn::BatchNorm2dImpl>();
    const bool last = i + 1 == n;
    const bool relu_next = !last && seq->ptr(i + 1)->as<torch::nn::ReLUImpl>() != nullptr;
    if (bn && last && residual.defined() && fused_norm_act_applies(x, *bn, residual)) {
      return batch_norm_act(x, *bn, residual);
    }
    if (bn && relu_next && fused_norm_act_applies(x, *bn)) {
      x = batch_norm_act(x, *bn);
      ++i;
      continue;
    }
    x = (seq->begin() + static_cast<std::ptrdiff_t>(i))->forward(x);
  }
  if (residual.defined()) x = torch::relu(x + residual);
  return x;
}

}  // namespace hpctrain
