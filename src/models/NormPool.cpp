#include "models/NormPool.hpp"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#include <type_traits>

#include "models/NormPoolKernels.hpp"

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::Planes planes(const torch::Tensor& x) {
  return {x.size(0), x.size(1), x.size(2), x.size(3)};
}

torch::Tensor f64(std::int64_t n) {
  return torch::empty({n}, torch::kDouble);
}

// The kernels' element pointer: float, or bfloat16 as its 16 bits.
template <typename T>
T* ptr(const torch::Tensor& t) {
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

struct NormReluPool : torch::autograd::Function<NormReluPool> {
  // x [N, C, H, W] -> [N, C, H/2, W/2]; running statistics updated in place when defined.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, torch::Tensor running_mean, torch::Tensor running_var,
                               double momentum, double eps) {
    // Named in profiles (run.profile_steps, analysis/op_profile.py): its loops are no ATen operator.
    RECORD_FUNCTION("hpctrain::batch_norm_relu_pool", std::vector<c10::IValue>({x}));
    const auto s = planes(x);
    const auto count = static_cast<double>(s.n * s.plane());
    auto mean = f64(s.c), squares = f64(s.c);
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::channel_moments(ptr<T>(x), s, c0, c1, mean.data_ptr<double>(), squares.data_ptr<double>());
    });
    const auto var = squares / count;
    const auto invstd = (var + eps).rsqrt().to(torch::kFloat);
    const auto mean32 = mean.to(torch::kFloat);
    const auto alpha = (invstd * weight).contiguous();  // LibTorch's order: x * alpha + beta
    const auto beta = (bias - mean32 * alpha).contiguous();
    auto out = torch::empty({s.n, s.c, s.h / 2, s.w / 2}, x.options());
    auto where = torch::empty(out.sizes(), x.options().dtype(torch::kUInt8));
    auto at = torch::empty(out.sizes(), x.options().dtype(torch::kFloat));
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::norm_relu_pool(ptr<T>(x), s, c0, c1, alpha.data_ptr<float>(), beta.data_ptr<float>(), ptr<T>(out),
                              where.data_ptr<std::uint8_t>(), at.data_ptr<float>());
    });
    if (running_mean.defined()) {
      running_mean.mul_(1 - momentum).add_(mean32, momentum);
      running_var.mul_(1 - momentum).add_((squares / std::max(count - 1, 1.0)).to(torch::kFloat), momentum);
    }
    ctx->save_for_backward({x, weight, out});
    ctx->saved_data["where"] = where;
    ctx->saved_data["at"] = at;
    ctx->saved_data["mean"] = mean32;
    ctx->saved_data["invstd"] = invstd;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("hpctrain::batch_norm_relu_pool_backward", std::vector<c10::IValue>({grads[0]}));
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &out = saved[2];
    const auto g = grads[0].to(x.scalar_type()).contiguous();
    const auto where = ctx->saved_data["where"].toTensor(), at = ctx->saved_data["at"].toTensor();
    const auto mean = ctx->saved_data["mean"].toTensor(), invstd = ctx->saved_data["invstd"].toTensor();
    const auto s = planes(x);
    const auto count = static_cast<double>(s.n * s.plane());
    auto sum_g = f64(s.c), sum_gx = f64(s.c);
    over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
      using T = decltype(element);
      kernels::norm_relu_pool_sums(ptr<T>(g), ptr<T>(out), at.data_ptr<float>(), s, c0, c1, mean.data_ptr<float>(),
                                   sum_g.data_ptr<double>(), sum_gx.data_ptr<double>());
    });
    const auto dot = sum_gx.to(torch::kFloat), total = sum_g.to(torch::kFloat);
    torch::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      // LibTorch's batch-norm backward: dx = ((dy - (x - mean) * k) - mean(dy)) * invstd * w.
      const auto k = (dot * invstd * invstd / count).contiguous();
      const auto mean_g = (total / count).contiguous();
      const auto scale = (invstd * weight).contiguous();
      dx = torch::empty_like(x);
      over_channels(x, [&](auto element, std::int64_t c0, std::int64_t c1) {
        using T = decltype(element);
        kernels::norm_relu_pool_input_grad(ptr<T>(x), ptr<T>(g), ptr<T>(out), where.data_ptr<std::uint8_t>(), s, c0, c1,
                                           mean.data_ptr<float>(), mean_g.data_ptr<float>(), k.data_ptr<float>(),
                                           scale.data_ptr<float>(), ptr<T>(dx));
      });
    }
    const auto dweight = ctx->needs_input_grad(1) ? dot * invstd : torch::Tensor();
    const auto dbias = ctx->needs_input_grad(2) ? total : torch::Tensor();
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
  double momentum = 0;
  torch::Tensor running_mean, running_var;
  if (bn.options.track_running_stats()) {
    torch::NoGradGuard no_grad;
    bn.num_batches_tracked += 1;
    const auto& m = bn.options.momentum();
    momentum = m ? *m : 1.0 / static_cast<double>(bn.num_batches_tracked.item<std::int64_t>());
    running_mean = bn.running_mean;
    running_var = bn.running_var;
  }
  return NormReluPool::apply(x, bn.weight, bn.bias, running_mean, running_var, momentum, bn.options.eps());
}

}  // namespace hpctrain
