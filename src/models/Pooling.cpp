#include "models/Pooling.hpp"

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct ChannelsLastForwardPool : torch::autograd::Function<ChannelsLastForwardPool> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, std::int64_t kernel, std::int64_t stride,
                               std::int64_t padding) {
    auto [out, indices] = at::max_pool2d_with_indices(x.contiguous(torch::MemoryFormat::ChannelsLast), {kernel, kernel},
                                                      {stride, stride}, {padding, padding}, {1, 1}, false);
    indices = indices.contiguous();
    ctx->save_for_backward({x, indices});
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    return out.contiguous();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const std::int64_t k = ctx->saved_data["kernel"].toInt();
    const std::int64_t s = ctx->saved_data["stride"].toInt();
    const std::int64_t p = ctx->saved_data["padding"].toInt();
    auto dx = at::max_pool2d_with_indices_backward(grad[0].contiguous(), saved[0], {k, k}, {s, s}, {p, p}, {1, 1},
                                                   false, saved[1]);
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor max_pool2d_cpu(const torch::Tensor& x, std::int64_t kernel, std::int64_t stride, std::int64_t padding) {
  return ChannelsLastForwardPool::apply(x, kernel, stride, padding);
}

torch::Tensor MaxPoolImpl::forward(const torch::Tensor& x) {
  if (x.device().is_cpu() && x.dim() == 4 && x.is_contiguous() && x.size(1) > 1) {
    return max_pool2d_cpu(x, kernel_, stride_, padding_);
  }
  return torch::max_pool2d(x, {kernel_, kernel_}, {stride_, stride_}, {padding_, padding_});
}

}  // namespace hpctrain
