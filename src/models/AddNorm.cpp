#include "models/AddNorm.hpp"

#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "models/AddNormKernels.hpp"
#include "models/KernelTensors.hpp"

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using kernel_tensors::float_contiguous;
#if HPCTRAIN_WITH_CUDA_KERNELS
namespace ck = cuda_kernels;
using kernel_tensors::check_launch;
using kernel_tensors::current_stream;
using kernel_tensors::float_or_null;
using kernel_tensors::kernel_type;
#endif

float round_to_bf16(float v) {
  return static_cast<float>(c10::BFloat16(v));
}
float round_to_half(float v) {
  return static_cast<float>(c10::Half(v));
}

// y's type: autocast runs layer_norm in float (and a matrix product taking y casts it to
// autocast's type); otherwise h's type.
c10::ScalarType output_type(c10::ScalarType h, c10::DeviceType device, bool y_for_matmul) {
  if (!at::autocast::is_autocast_enabled(device)) return h;
  return y_for_matmul ? at::autocast::get_autocast_dtype(device) : torch::kFloat;
}

struct AddLayerNorm : torch::autograd::Function<AddLayerNorm> {
  // x and r of h's type (r may be bfloat16/half with a float h) -> {h, y}.
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& r_in,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                               c10::ScalarType y_type) {
    RECORD_FUNCTION("hpctrain::add_layer_norm", std::vector<c10::IValue>({x_in, r_in}));
    const auto x = x_in.contiguous(), r = r_in.contiguous();
    const std::int64_t d = x.size(-1), rows = d > 0 ? x.numel() / d : 0;
    auto h = torch::empty_like(x);
    auto y = torch::empty(x.sizes(), x.options().dtype(y_type));
    const auto stat_options = x.options().dtype(torch::kFloat);
    auto mean = torch::empty({rows}, stat_options), rstd = torch::empty({rows}, stat_options);
    if (x.is_cuda()) {
#if HPCTRAIN_WITH_CUDA_KERNELS
      const c10::cuda::CUDAGuard guard(x.device());
      const ck::AddNormForward a{x.data_ptr(),
                                 r.data_ptr(),
                                 float_or_null(weight),
                                 float_or_null(bias),
                                 h.data_ptr(),
                                 y.data_ptr(),
                                 mean.data_ptr<float>(),
                                 rstd.data_ptr<float>(),
                                 rows,
                                 d,
                                 static_cast<float>(eps),
                                 kernel_type(x.scalar_type()),
                                 kernel_type(r.scalar_type()),
                                 kernel_type(y_type)};
      check_launch(ck::add_norm_forward(a, current_stream(x)), "add_layer_norm");
#else
      kernel_tensors::no_kernels("add_layer_norm");
#endif
    } else {
      const auto xf = float_contiguous(x), rf = float_contiguous(r);
      const auto wf = float_contiguous(weight), bf = float_contiguous(bias);
      auto hf = torch::empty(x.sizes(), stat_options), yf = torch::empty(x.sizes(), stat_options);
      const auto t = x.scalar_type();
      kernels::add_layer_norm_forward(
          xf.data_ptr<float>(), rf.data_ptr<float>(), wf.defined() ? wf.data_ptr<float>() : nullptr,
          bf.defined() ? bf.data_ptr<float>() : nullptr, rows, d, eps,
          t == torch::kBFloat16 ? round_to_bf16
          : t == torch::kHalf   ? round_to_half
                                : nullptr,
          hf.data_ptr<float>(), yf.data_ptr<float>(), mean.data_ptr<float>(), rstd.data_ptr<float>());
      h.copy_(hf);
      y.copy_(yf);
    }
    ctx->save_for_backward({h, weight, mean, rstd});
    ctx->saved_data["r_type"] = static_cast<std::int64_t>(r.scalar_type());
    ctx->saved_data["affine"] = weight.defined();
    return {h, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &weight = saved[1], &mean = saved[2], &rstd = saved[3];
    const auto r_type = static_cast<c10::ScalarType>(ctx->saved_data["r_type"].toInt());
    const bool affine = ctx->saved_data["affine"].toBool();
    const auto dh_in = grads[0].defined() ? grads[0].to(h.scalar_type()).contiguous() : torch::Tensor();
    if (!grads[1].defined()) {  // y unused: only the add's gradient
      return {dh_in, dh_in.defined() ? dh_in.to(r_type) : dh_in, {}, {}, {}, {}};
    }
    RECORD_FUNCTION("hpctrain::add_layer_norm_backward", std::vector<c10::IValue>({grads[1]}));
    const auto dy = grads[1].contiguous();
    const std::int64_t d = h.size(-1), rows = d > 0 ? h.numel() / d : 0;
    auto dh = torch::empty_like(h);
    torch::Tensor dr = r_type == h.scalar_type() ? dh : torch::empty(h.sizes(), h.options().dtype(r_type));
    torch::Tensor dweight, dbias;
    if (affine) {
      dweight = torch::empty({d}, weight.options());
      dbias = torch::empty({d}, weight.options());
    }
    if (h.is_cuda()) {
#if HPCTRAIN_WITH_CUDA_KERNELS
      const c10::cuda::CUDAGuard guard(h.device());
      torch::Tensor partial;
      if (affine) partial = torch::empty({ck::add_norm_partial_floats(rows, d)}, h.options().dtype(torch::kFloat));
      const ck::AddNormBackward a{dy.data_ptr(),
                                  dh_in.defined() ? dh_in.data_ptr() : nullptr,
                                  h.data_ptr(),
                                  float_or_null(weight),
                                  mean.data_ptr<float>(),
                                  rstd.data_ptr<float>(),
                                  dh.data_ptr(),
                                  r_type == h.scalar_type() ? nullptr : dr.data_ptr(),
                                  float_or_null(dweight),
                                  float_or_null(dbias),
                                  float_or_null(partial),
                                  rows,
                                  d,
                                  kernel_type(h.scalar_type()),
                                  kernel_type(r_type),
                                  kernel_type(dy.scalar_type())};
      check_launch(ck::add_norm_backward(a, current_stream(h)), "add_layer_norm backward");
#else
      kernel_tensors::no_kernels("add_layer_norm backward");
#endif
    } else {
      const auto dyf = float_contiguous(dy), dhf_in = float_contiguous(dh_in), hf = float_contiguous(h);
      const auto wf = float_contiguous(weight);
      auto dhf = torch::empty(h.sizes(), h.options().dtype(torch::kFloat));
      auto sums = torch::zeros({2, d}, h.options().dtype(torch::kDouble));
      kernels::add_layer_norm_backward(dyf.data_ptr<float>(), dhf_in.defined() ? dhf_in.data_ptr<float>() : nullptr,
                                       hf.data_ptr<float>(), affine ? wf.data_ptr<float>() : nullptr,
                                       mean.data_ptr<float>(), rstd.data_ptr<float>(), rows, d, dhf.data_ptr<float>(),
                                       affine ? sums.data_ptr<double>() : nullptr,
                                       affine ? sums.data_ptr<double>() + d : nullptr);
      dh.copy_(dhf);
      if (dr.data_ptr() != dh.data_ptr()) dr.copy_(dhf);
      if (affine) {
        dweight.copy_(sums[0]);
        dbias.copy_(sums[1]);
      }
    }
    return {dh, dr, dweight, dbias, {}, {}};
  }
};

}  // namespace

bool cuda_kernels_compiled() {
  return HPCTRAIN_WITH_CUDA_KERNELS;
}

bool add_layer_norm_fused_on(const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& weight,
                             const torch::Tensor& bias, bool y_for_matmul) {
  if (!x.is_cuda() || r.device() != x.device() || r.sizes() != x.sizes() || x.numel() == 0) return false;
  // float [d] weights on x's device, contiguous; a bias only with a weight (as LayerNorm has them).
  auto fits = [&](const torch::Tensor& t) {
    return !t.defined() || (t.scalar_type() == torch::kFloat && t.dim() == 1 && t.numel() == x.size(-1) &&
                            t.device() == x.device() && t.is_contiguous());
  };
  if (!fits(weight) || !fits(bias) || (bias.defined() && !weight.defined())) return false;
#if HPCTRAIN_WITH_CUDA_KERNELS
  ck::Dtype h{}, rt{}, yt{};
  const auto h_type = torch::promote_types(x.scalar_type(), r.scalar_type());
  return kernel_type(h_type, h) && kernel_type(r.scalar_type(), rt) &&
         kernel_type(output_type(h_type, x.device().type(), y_for_matmul), yt) && ck::add_norm_supported(h, rt, yt);
#else
  static_cast<void>(y_for_matmul);
  return false;
#endif
}

std::pair<torch::Tensor, torch::Tensor> add_layer_norm_unfused(const torch::Tensor& x, const torch::Tensor& r,
                                                               const torch::Tensor& weight, const torch::Tensor& bias,
                                                               double eps, bool y_for_matmul) {
  auto h = x + r;
  auto y = torch::layer_norm(h, {x.size(-1)}, weight, bias, eps);
  if (y_for_matmul) y = y.to(output_type(y.scalar_type(), y.device().type(), true));
  return {h, y};
}

std::pair<torch::Tensor, torch::Tensor> add_layer_norm(const torch::Tensor& x, const torch::Tensor& r,
                                                       const torch::Tensor& weight, const torch::Tensor& bias,
                                                       double eps, bool y_for_matmul) {
  const bool cpu = x.device().is_cpu() && r.device().is_cpu() && r.sizes() == x.sizes();
  if (!cpu && !add_layer_norm_fused_on(x, r, weight, bias, y_for_matmul)) {
    return add_layer_norm_unfused(x, r, weight, bias, eps, y_for_matmul);
  }
  const auto h_type = torch::promote_types(x.scalar_type(), r.scalar_type());
  const auto xh = x.to(h_type);
  // The CPU reference takes r of any type; the kernel r of h's type or a narrower float type.
  const auto rr = cpu ? r.to(h_type) : r;
  torch::Tensor w = weight, b = bias;
  if (cpu && w.defined()) w = w.to(torch::kFloat);
  if (cpu && b.defined()) b = b.to(torch::kFloat);
  const auto out = AddLayerNorm::apply(xh, rr, w, b, eps, output_type(h_type, x.device().type(), y_for_matmul));
  return {out[0], out[1]};
}

}  // namespace hpctrain
