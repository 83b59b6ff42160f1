#include "models/FusedMlp.hpp"

#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>

#include "models/GemmEpilogue.hpp"

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The products' type: autocast's where it is on (as ATen's linear under autocast), else x's.
// (Autocast leaves float64 alone.)
c10::ScalarType compute_type(const torch::Tensor& x) {
  const auto device = x.device().type();
  return at::autocast::is_autocast_enabled(device) && x.scalar_type() != torch::kDouble
             ? at::autocast::get_autocast_dtype(device)
             : x.scalar_type();
}

struct MlpGeluTanh : torch::autograd::Function<MlpGeluTanh> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& w1_in,
                               const torch::Tensor& b1_in, const torch::Tensor& w2_in, const torch::Tensor& b2_in,
                               c10::ScalarType type) {
    RECORD_FUNCTION("hpctrain::mlp_gelu_tanh", std::vector<c10::IValue>({x_in}));
    const auto x = x_in.reshape({-1, x_in.size(-1)}).to(type).contiguous();
    const auto w1 = w1_in.to(type).contiguous(), b1 = b1_in.to(type).contiguous();
    const auto w2 = w2_in.to(type).contiguous(), b2 = b2_in.to(type).contiguous();
    torch::Tensor h, pre;
    if (!linear_gelu_lt(x, w1, b1, h, pre)) {  // ATen: the product with its bias, then the GELU
      pre = torch::addmm(b1, x, w1.t());
      h = torch::gelu(pre, "tanh");
    }
    auto y = torch::addmm(b2, h, w2.t());  // ATen's own: its cuBLASLt bias epilogue on GPUs
    ctx->save_for_backward({x, w1, w2, pre, h});
    ctx->saved_data["x_type"] = static_cast<std::int64_t>(x_in.scalar_type());
    ctx->saved_data["x_shape"] = x_in.sizes().vec();
    ctx->saved_data["types"] = std::vector<std::int64_t>{
        static_cast<std::int64_t>(w1_in.scalar_type()), static_cast<std::int64_t>(b1_in.scalar_type()),
        static_cast<std::int64_t>(w2_in.scalar_type()), static_cast<std::int64_t>(b2_in.scalar_type())};
    auto shape = x_in.sizes().vec();
    shape.back() = w2.size(0);
    return y.view(shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("hpctrain::mlp_gelu_tanh_backward", std::vector<c10::IValue>({grads[0]}));
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w1 = saved[1], &w2 = saved[2], &pre = saved[3], &h = saved[4];
    const auto types = ctx->saved_data["types"].toIntVector();
    const auto dy = grads[0].reshape({-1, grads[0].size(-1)}).to(x.scalar_type()).contiguous();
    // Only what autograd asks for: frozen parameters (or an input without a gradient) skip
    // their products.
    const bool need_x = ctx->needs_input_grad(0), need_fc1 = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    torch::Tensor dw2, db2, dpre, db1;
    if ((ctx->needs_input_grad(3) || ctx->needs_input_grad(4)) && !weight_grad_bgrad_lt(dy, h, dw2, db2)) {
      dw2 = dy.t().mm(h);
      db2 = dy.sum(0);
    }
    if ((need_x || need_fc1) && !matmul_dgelu_bgrad_lt(dy, w2, pre, dpre, db1)) {
      dpre = at::gelu_backward(dy.mm(w2), pre, "tanh");
      db1 = dpre.sum(0);
    }
    torch::Tensor dx;
    if (need_x) {
      dx = dpre.mm(w1).view(ctx->saved_data["x_shape"].toIntVector());
      dx = dx.to(static_cast<c10::ScalarType>(ctx->saved_data["x_type"].toInt()));
    }
    auto as = [&](const torch::Tensor& t, std::size_t i) {
      return t.defined() ? t.to(static_cast<c10::ScalarType>(types[i])) : t;
    };
    return {dx, need_fc1 ? as(dpre.t().mm(x), 0) : torch::Tensor(), as(db1, 1), as(dw2, 2), as(db2, 3), {}};
  }
};

// Every tensor defined on x's device, the shapes of a two-layer MLP over x's last dimension.
bool mlp_shapes(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                const torch::Tensor& b2) {
  if (!x.defined() || x.dim() < 2 || x.numel() == 0) return false;
  for (const auto* t : {&w1, &b1, &w2, &b2}) {
    if (!t->defined() || t->device() != x.device()) return false;
  }
  return w1.dim() == 2 && w2.dim() == 2 && w1.size(1) == x.size(-1) && w2.size(1) == w1.size(0) &&
         b1.numel() == w1.size(0) && b2.numel() == w2.size(0);
}

}  // namespace

bool mlp_gelu_fused_on(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                       const torch::Tensor& w2, const torch::Tensor& b2) {
  if (!gemm_epilogues_available() || !x.is_cuda() || !mlp_shapes(x, w1, b1, w2, b2)) return false;
  const auto type = compute_type(x);
  // The GELU input kept by the epilogue needs a hidden width that is a multiple of 8.
  return (type == torch::kFloat || type == torch::kBFloat16 || type == torch::kHalf) && w1.size(0) % 8 == 0;
}

torch::Tensor mlp_gelu_tanh(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                            const torch::Tensor& w2, const torch::Tensor& b2) {
  const bool takes = x.is_cuda() ? mlp_gelu_fused_on(x, w1, b1, w2, b2) : mlp_shapes(x, w1, b1, w2, b2);
  if (!takes) return mlp_gelu_tanh_unfused(x, w1, b1, w2, b2);
  const auto type = compute_type(x);
  if (x.is_cuda() && !torch::GradMode::is_enabled()) {
    // Evaluation keeps nothing for a backward: ATen's GEMM with the bias and GELU epilogue
    // (the tanh GELU on GPUs), without the GELU's input.
    const auto x2 = x.reshape({-1, x.size(-1)}).to(type);
    const auto h = at::_addmm_activation(b1.to(type), x2, w1.to(type).t(), 1, 1, /*use_gelu=*/true);
    auto shape = x.sizes().vec();
    shape.back() = w2.size(0);
    return torch::addmm(b2.to(type), h, w2.to(type).t()).view(shape);
  }
  return MlpGeluTanh::apply(x, w1, b1, w2, b2, type);
}

torch::Tensor mlp_gelu_tanh_unfused(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                                    const torch::Tensor& w2, const torch::Tensor& b2) {
  return torch::linear(torch::gelu(torch::linear(x, w1, b1), "tanh"), w2, b2);
}

}  // namespace hpctrain
