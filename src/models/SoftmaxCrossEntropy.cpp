#include "models/SoftmaxCrossEntropy.hpp"

#include <ATen/record_function.h>

#include "models/KernelTensors.hpp"
#include "models/LossKernels.hpp"

namespace hpctrain {
namespace {

using kernel_tensors::float_contiguous;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
#if HPCTRAIN_WITH_CUDA_KERNELS
namespace ck = cuda_kernels;
using kernel_tensors::check_launch;
using kernel_tensors::current_stream;
using kernel_tensors::kernel_type;
#endif

struct SoftmaxCrossEntropy : torch::autograd::Function<SoftmaxCrossEntropy> {
  // logits [rows, c], targets int64 [rows] -> the summed loss, float32 [].
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits_in, const torch::Tensor& targets) {
    RECORD_FUNCTION("hpctrain::softmax_cross_entropy", std::vector<c10::IValue>({logits_in}));
    const auto logits = logits_in.contiguous();
    const std::int64_t rows = logits.size(0), c = logits.size(1);
    const auto float_options = logits.options().dtype(torch::kFloat);
    auto lse = torch::empty({rows}, float_options);
    torch::Tensor loss;
    if (logits.is_cuda()) {
#if HPCTRAIN_WITH_CUDA_KERNELS
      const c10::cuda::CUDAGuard guard(logits.device());
      loss = torch::empty({}, float_options);
      auto row_loss = torch::empty({rows}, float_options);
      const ck::CrossEntropyForward a{logits.data_ptr(),
                                      targets.data_ptr<std::int64_t>(),
                                      lse.data_ptr<float>(),
                                      row_loss.data_ptr<float>(),
                                      loss.data_ptr<float>(),
                                      rows,
                                      c,
                                      kernel_type(logits.scalar_type())};
      check_launch(ck::cross_entropy_forward(a, current_stream(logits)), "softmax_cross_entropy");
#else
      kernel_tensors::no_kernels("softmax_cross_entropy");
#endif
    } else {
      const auto z = float_contiguous(logits);
      loss = torch::tensor(static_cast<float>(kernels::cross_entropy_forward(
          z.data_ptr<float>(), targets.data_ptr<std::int64_t>(), rows, c, lse.data_ptr<float>())));
    }
    ctx->save_for_backward({logits, targets, lse});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &logits = saved[0], &targets = saved[1], &lse = saved[2];
    RECORD_FUNCTION("hpctrain::softmax_cross_entropy_backward", std::vector<c10::IValue>({logits}));
    const std::int64_t rows = logits.size(0), c = logits.size(1);
    const auto g = grads[0].to(torch::kFloat).contiguous();
    auto grad = torch::empty_like(logits);
    if (logits.is_cuda()) {
#if HPCTRAIN_WITH_CUDA_KERNELS
      const c10::cuda::CUDAGuard guard(logits.device());
      const ck::CrossEntropyBackward a{logits.data_ptr(),
                                       targets.data_ptr<std::int64_t>(),
                                       lse.data_ptr<float>(),
                                       g.data_ptr<float>(),
                                       grad.data_ptr(),
                                       rows,
                                       c,
                                       kernel_type(logits.scalar_type())};
      check_launch(ck::cross_entropy_backward(a, current_stream(logits)), "softmax_cross_entropy backward");
#else
      kernel_tensors::no_kernels("softmax_cross_entropy backward");
#endif
    } else {
      const auto z = float_contiguous(logits);
      auto gf = torch::empty(logits.sizes(), logits.options().dtype(torch::kFloat));
      kernels::cross_entropy_backward(z.data_ptr<float>(), targets.data_ptr<std::int64_t>(), lse.data_ptr<float>(),
                                      rows, c, g.item<float>(), gf.data_ptr<float>());
      grad.copy_(gf);
    }
    return {grad, {}};
  }
};

bool shapes_fit(const torch::Tensor& logits, const torch::Tensor& targets) {
  return logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) && logits.size(1) > 0 &&
         !targets.is_floating_point() && targets.device() == logits.device();
}

}  // namespace

bool softmax_cross_entropy_fused_on(const torch::Tensor& logits, const torch::Tensor& targets) {
#if HPCTRAIN_WITH_CUDA_KERNELS
  cuda_kernels::Dtype t{};
  return logits.is_cuda() && shapes_fit(logits, targets) && kernel_type(logits.scalar_type(), t);
#else
  (void)logits;
  (void)targets;
  return false;
#endif
}

torch::Tensor softmax_cross_entropy_sum_unfused(const torch::Tensor& logits, const torch::Tensor& targets) {
  namespace F = torch::nn::functional;
  return F::cross_entropy(logits.to(torch::kFloat), targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
}

torch::Tensor softmax_cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets) {
  const bool cpu = logits.device().is_cpu() && shapes_fit(logits, targets) && logits.is_floating_point();
  if (!cpu && !softmax_cross_entropy_fused_on(logits, targets)) {
    return softmax_cross_entropy_sum_unfused(logits, targets);
  }
  return SoftmaxCrossEntropy::apply(logits, targets.to(torch::kLong).contiguous());
}

}  // namespace hpctrain
