#include "models/AddNorm.hpp"

#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>

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

// The backward of y = LN(h) (plus dh_in, h's gradient from its other uses): dh; dr, r's gradient
// of type r_type (dh itself when r has h's type), when `with_r`; the weights' gradients (the
// operators always have weights: weights_fit). Without r (layer_norm_for_matmul) r_type is y's,
// which picks the kernel's types.
struct NormGrads {
  torch::Tensor dh, dr, dweight, dbias;
};
NormGrads norm_backward(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& mean,
                        const torch::Tensor& rstd, const torch::Tensor& dh_in, const torch::Tensor& dy,
                        c10::ScalarType r_type, bool with_r) {
  const std::int64_t d = h.size(-1), rows = d > 0 ? h.numel() / d : 0;
  NormGrads g;
  g.dh = torch::empty_like(h);
  const bool own_dr = with_r && r_type != h.scalar_type();
  if (with_r) g.dr = own_dr ? torch::empty(h.sizes(), h.options().dtype(r_type)) : g.dh;
  g.dweight = torch::empty({d}, weight.options());
  g.dbias = torch::empty({d}, weight.options());
  if (h.is_cuda()) {
#if HPCTRAIN_WITH_CUDA_KERNELS
    const c10::cuda::CUDAGuard guard(h.device());
    const auto partial = torch::empty({ck::add_norm_partial_floats(rows, d)}, h.options().dtype(torch::kFloat));
    const ck::AddNormBackward a{dy.data_ptr(),
                                dh_in.defined() ? dh_in.data_ptr() : nullptr,
                                h.data_ptr(),
                                weight.data_ptr<float>(),
                                mean.data_ptr<float>(),
                                rstd.data_ptr<float>(),
                                g.dh.data_ptr(),
                                own_dr ? g.dr.data_ptr() : nullptr,
                                g.dweight.data_ptr<float>(),
                                g.dbias.data_ptr<float>(),
                                partial.data_ptr<float>(),
                                rows,
                                d,
                                kernel_type(h.scalar_type()),
                                kernel_type(r_type),
                                kernel_type(dy.scalar_type())};
    check_launch(ck::add_norm_backward(a, current_stream(h)), "add_layer_norm backward");
#else
    kernel_tensors::no_kernels("add_layer_norm backward");
#endif
    return g;
  }
  const auto dyf = float_contiguous(dy), dhf_in = float_contiguous(dh_in), hf = float_contiguous(h);
  const auto wf = float_contiguous(weight);
  auto dhf = torch::empty(h.sizes(), h.options().dtype(torch::kFloat));
  auto sums = torch::zeros({2, d}, h.options().dtype(torch::kDouble));
  kernels::add_layer_norm_backward(dyf.data_ptr<float>(), dhf_in.defined() ? dhf_in.data_ptr<float>() : nullptr,
                                   hf.data_ptr<float>(), wf.data_ptr<float>(), mean.data_ptr<float>(),
                                   rstd.data_ptr<float>(), rows, d, dhf.data_ptr<float>(), sums.data_ptr<double>(),
                                   sums.data_ptr<double>() + d);
  g.dh.copy_(dhf);
  if (own_dr) g.dr.copy_(dhf);
  g.dweight.copy_(sums[0]);
  g.dbias.copy_(sums[1]);
  return g;
}

// The forward of h = x + r, y = LN(h) (x, r contiguous); without r (undefined), h is x and
// nothing is added (r_type, y's then, picks the kernel's types). {h, y, mean, rstd}.
std::array<torch::Tensor, 4> norm_forward(const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& weight,
                                          const torch::Tensor& bias, double eps, c10::ScalarType y_type,
                                          c10::ScalarType r_type) {
  const std::int64_t d = x.size(-1), rows = d > 0 ? x.numel() / d : 0;
  auto h = r.defined() ? torch::empty_like(x) : x;
  auto y = torch::empty(x.sizes(), x.options().dtype(y_type));
  const auto stat_options = x.options().dtype(torch::kFloat);
  auto mean = torch::empty({rows}, stat_options), rstd = torch::empty({rows}, stat_options);
  if (x.is_cuda()) {
#if HPCTRAIN_WITH_CUDA_KERNELS
    const c10::cuda::CUDAGuard guard(x.device());
    // Without r the kernel reads h where x is and writes nothing there.
    const ck::AddNormForward a{x.data_ptr(),
                               r.defined() ? r.data_ptr() : nullptr,
                               weight.data_ptr<float>(),
                               bias.data_ptr<float>(),
                               h.data_ptr(),
                               y.data_ptr(),
                               mean.data_ptr<float>(),
                               rstd.data_ptr<float>(),
                               rows,
                               d,
                               static_cast<float>(eps),
                               kernel_type(x.scalar_type()),
                               kernel_type(r_type),
                               kernel_type(y_type)};
    check_launch(ck::add_norm_forward(a, current_stream(x)), "add_layer_norm");
#else
    static_cast<void>(r_type);
    kernel_tensors::no_kernels("add_layer_norm");
#endif
    return {h, y, mean, rstd};
  }
  // The CPU reference adds r, or zeros (h is then x exactly).
  const auto xf = float_contiguous(x), rf = r.defined() ? float_contiguous(r) : torch::zeros_like(xf);
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
  if (r.defined()) h.copy_(hf);
  y.copy_(yf);
  return {h, y, mean, rstd};
}

struct AddLayerNorm : torch::autograd::Function<AddLayerNorm> {
  // x and r of h's type (r may be bfloat16/half with a float h) -> {h, y}.
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& r_in,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                               c10::ScalarType y_type) {
    RECORD_FUNCTION("hpctrain::add_layer_norm", std::vector<c10::IValue>({x_in, r_in}));
    const auto r = r_in.contiguous();
    auto [h, y, mean, rstd] = norm_forward(x_in.contiguous(), r, weight, bias, eps, y_type, r.scalar_type());
    ctx->save_for_backward({h, weight, mean, rstd});
    ctx->saved_data["r_type"] = static_cast<std::int64_t>(r.scalar_type());
    return {h, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& h = saved[0];
    const auto r_type = static_cast<c10::ScalarType>(ctx->saved_data["r_type"].toInt());
    const auto dh_in = grads[0].defined() ? grads[0].to(h.scalar_type()).contiguous() : torch::Tensor();
    if (!grads[1].defined()) {  // y unused: only the add's gradient
      return {dh_in, dh_in.defined() ? dh_in.to(r_type) : dh_in, {}, {}, {}, {}};
    }
    RECORD_FUNCTION("hpctrain::add_layer_norm_backward", std::vector<c10::IValue>({grads[1]}));
    auto g = norm_backward(h, saved[1], saved[2], saved[3], dh_in, grads[1].contiguous(), r_type, /*with_r=*/true);
    return {g.dh, g.dr, g.dweight, g.dbias, {}, {}};
  }
};

// y = LN(x), y of another type than x (a matrix product's input under autocast).
struct LayerNormForMatmul : torch::autograd::Function<LayerNormForMatmul> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps, c10::ScalarType y_type) {
    RECORD_FUNCTION("hpctrain::layer_norm_for_matmul", std::vector<c10::IValue>({x_in}));
    const auto x = x_in.contiguous();
    auto [h, y, mean, rstd] = norm_forward(x, torch::Tensor(), weight, bias, eps, y_type, y_type);
    ctx->save_for_backward({x, weight, mean, rstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return {{}, {}, {}, {}, {}};
    RECORD_FUNCTION("hpctrain::layer_norm_for_matmul_backward", std::vector<c10::IValue>({grads[0]}));
    const auto dy = grads[0].contiguous();
    auto g =
        norm_backward(saved[0], saved[1], saved[2], saved[3], torch::Tensor(), dy, dy.scalar_type(), /*with_r=*/false);
    return {g.dh, g.dweight, g.dbias, {}, {}};
  }
};

// weight and bias of [d] values on x's device; for the kernels also float and contiguous (the
// CPU reference converts them), and at most 2^31 - 1 rows (one block each). Without weights
// ATen's ops run (an autograd Function takes no undefined input).
bool weights_fit(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const bool kernel = x.is_cuda();
  auto fits = [&](const torch::Tensor& t) {
    return t.defined() && t.dim() == 1 && t.numel() == x.size(-1) && t.device() == x.device() &&
           (!kernel || (t.scalar_type() == torch::kFloat && t.is_contiguous()));
  };
  const bool rows = !kernel || x.size(-1) == 0 || x.numel() / x.size(-1) <= 0x7fffffff;
  return x.dim() > 0 && rows && fits(weight) && fits(bias);
}

}  // namespace

bool cuda_kernels_compiled() {
  return HPCTRAIN_WITH_CUDA_KERNELS;
}

bool add_layer_norm_fused_on(const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& weight,
                             const torch::Tensor& bias, bool y_for_matmul) {
  if (!x.is_cuda() || r.device() != x.device() || r.sizes() != x.sizes() || x.numel() == 0) return false;
  if (!weights_fit(x, weight, bias)) return false;
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
  const bool cpu = x.device().is_cpu() && r.device().is_cpu() && r.sizes() == x.sizes() && weights_fit(x, weight, bias);
  if (!cpu && !add_layer_norm_fused_on(x, r, weight, bias, y_for_matmul)) {
    return add_layer_norm_unfused(x, r, weight, bias, eps, y_for_matmul);
  }
  const auto h_type = torch::promote_types(x.scalar_type(), r.scalar_type());
  const auto xh = x.to(h_type);
  // The CPU reference takes r of any type; the kernel r of h's type or a narrower float type.
  const auto rr = cpu ? r.to(h_type) : r;
  const auto w = cpu ? weight.to(torch::kFloat) : weight, b = cpu ? bias.to(torch::kFloat) : bias;
  const auto out = AddLayerNorm::apply(xh, rr, w, b, eps, output_type(h_type, x.device().type(), y_for_matmul));
  return {out[0], out[1]};
}

bool layer_norm_for_matmul_fused_on(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  // Only where y's type differs from x's (float x under autocast): else ATen's layer_norm, which
  // writes nothing more.
  if (!x.is_cuda() || x.numel() == 0 || x.scalar_type() != torch::kFloat || !weights_fit(x, weight, bias)) {
    return false;
  }
  const auto y_type = output_type(torch::kFloat, x.device().type(), /*y_for_matmul=*/true);
  if (y_type == torch::kFloat) return false;
#if HPCTRAIN_WITH_CUDA_KERNELS
  ck::Dtype yt{};
  return kernel_type(y_type, yt) && ck::add_norm_supported(ck::Dtype::Float, yt, yt);
#else
  return false;
#endif
}

torch::Tensor layer_norm_for_matmul_unfused(const torch::Tensor& x, const torch::Tensor& weight,
                                            const torch::Tensor& bias, double eps) {
  const auto y = torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  return y.to(output_type(y.scalar_type(), y.device().type(), /*y_for_matmul=*/true));
}

torch::Tensor layer_norm_for_matmul(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                    double eps) {
  // On the CPU the reference loops (with the weights; without them ATen's ops).
  const bool cpu = x.device().is_cpu() && weights_fit(x, weight, bias);
  if (!cpu && !layer_norm_for_matmul_fused_on(x, weight, bias)) {
    return layer_norm_for_matmul_unfused(x, weight, bias, eps);
  }
  const auto w = cpu ? weight.to(torch::kFloat) : weight, b = cpu ? bias.to(torch::kFloat) : bias;
  return LayerNormForMatmul::apply(x, w, b, eps, output_type(x.scalar_type(), x.device().type(), true));
}

}  // namespace hpctrain
