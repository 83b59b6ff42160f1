#include "models/NormPool.hpp"

#include <ATen/record_function.h>

#include "models/FusedNorm.hpp"
#include "models/NormPoolKernels.hpp"

namespace hpctrain {
namespace {

using fused::maybe;
using fused::Maybe;
using fused::over_channels;
using fused::ptr;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct NormReluPool : torch::autograd::Function<NormReluPool> {
  // x [N, C, H, W] -> [N, C, H/2, W/2]; running statistics updated in place when defined.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const Maybe& running_mean, const Maybe& running_var,
                               double momentum, double eps) {
    // Named in profiles (run.profile_steps, analysis/op_profile.py): its loops are no ATen operator.
    RECORD_FUNCTION("hpctrain::batch_norm_relu_pool", std::vector<c10::IValue>({x}));
    const auto s = fused::planes(x);
    const auto stats = fused::batch_stats(
        x, weight, bias, {running_mean.value_or(torch::Tensor()), running_var.value_or(torch::Tensor()), momentum},
        eps);
    auto out = torch::empty({s.n, s.c, s.h / 2, s.w / 2}, x.options());
    auto where = torch::empty(out.sizes(), x.options().dtype(torch::kUInt8));
    auto at = torch::empty(out.sizes(), x.options().dtype(torch::kFloat));
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::norm_relu_pool(ptr<T>(x), s, c0, c1, stats.alpha.data_ptr<float>(), stats.beta.data_ptr<float>(),
                              ptr<T>(out), where.data_ptr<std::uint8_t>(), at.data_ptr<float>());
    });
    ctx->save_for_backward({x, weight, out});
    ctx->saved_data["where"] = where;
    ctx->saved_data["at"] = at;
    ctx->saved_data["mean"] = stats.mean;
    ctx->saved_data["invstd"] = stats.invstd;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("hpctrain::batch_norm_relu_pool_backward", std::vector<c10::IValue>({grads[0]}));
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &out = saved[2];
    const auto g = grads[0].to(x.scalar_type()).contiguous();
    const auto where = ctx->saved_data["where"].toTensor(), at = ctx->saved_data["at"].toTensor();
    const auto mean = ctx->saved_data["mean"].toTensor(), invstd = ctx->saved_data["invstd"].toTensor();
    const auto s = fused::planes(x);
    auto sum_g = torch::empty({s.c}, torch::kDouble), sum_gx = torch::empty({s.c}, torch::kDouble);
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::norm_relu_pool_sums(ptr<T>(g), ptr<T>(out), at.data_ptr<float>(), s, c0, c1, mean.data_ptr<float>(),
                                   sum_g.data_ptr<double>(), sum_gx.data_ptr<double>());
    });
    const auto norm = fused::norm_grads(sum_g, sum_gx, invstd, weight, static_cast<double>(s.n * s.plane()));
    torch::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty_like(x);
      over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
        using T = decltype(element);
        kernels::norm_relu_pool_input_grad(ptr<T>(x), ptr<T>(g), ptr<T>(out), where.data_ptr<std::uint8_t>(), s, c0, c1,
                                           mean.data_ptr<float>(), norm.mean_g.data_ptr<float>(),
                                           norm.k.data_ptr<float>(), norm.scale.data_ptr<float>(), ptr<T>(dx));
      });
    }
    const auto dweight = ctx->needs_input_grad(1) ? norm.dweight : torch::Tensor();
    const auto dbias = ctx->needs_input_grad(2) ? norm.dbias : torch::Tensor();
    return {dx, dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool fused_norm_pool_applies(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn) {
  // bfloat16 inputs are what a convolution gives under CPU autocast (precision.mode=bf16);
  // the layers then normalize in float with float parameters and return bfloat16, as here.
  const auto dtype = x.scalar_type();
  return bn.is_training() && bn.options.affine() && x.device().is_cpu() &&
         (dtype == torch::kFloat || dtype == torch::kBFloat16) && x.dim() == 4 && x.is_contiguous() && x.size(0) > 0 &&
         x.size(2) >= 2 && x.size(3) >= 2 && bn.weight.scalar_type() == torch::kFloat;
}

torch::Tensor batch_norm_relu_pool(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn) {
  const auto running = fused::next_running_stats(bn);
  return NormReluPool::apply(x, bn.weight, bn.bias, maybe(running.mean), maybe(running.var), running.momentum,
                             bn.options.eps());
}

}  // namespace hpctrain
