#pragma once
// Max pooling that computes what torch::nn::MaxPool2d computes, faster on CPUs.
//
// LibTorch's CPU max_pool2d is several times slower on NCHW tensors than on channels-last
// ones (one thread, 64x32x28x28: 6.5 ms against 1.5 ms), while its backward is fast on
// NCHW and slow on a channels-last gradient meeting NCHW neighbours. So the forward runs on a
// channels-last copy, and the backward runs the NCHW kernel from the saved indices (a
// position within each (sample, channel) plane, the same in either layout). Outputs,
// indices and gradients are those of the NCHW kernel (docs/benchmarks.md, "CPU max pooling").
// Elsewhere (GPUs, channels-last inputs, single channels) it is torch::max_pool2d.
#include <torch/torch.h>

namespace hpctrain {

struct MaxPoolImpl : torch::nn::Module {
  MaxPoolImpl(std::int64_t kernel, std::int64_t stride, std::int64_t padding)
      : kernel_(kernel), stride_(stride), padding_(padding) {}
  explicit MaxPoolImpl(std::int64_t kernel) : MaxPoolImpl(kernel, kernel, 0) {}
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::int64_t kernel_, stride_, padding_;
};
TORCH_MODULE(MaxPool);

// The function itself (also for tests): max pooling of a 4-D CPU NCHW tensor through the
// channels-last kernel, with the NCHW backward.
torch::Tensor max_pool2d_cpu(const torch::Tensor& x, std::int64_t kernel, std::int64_t stride, std::int64_t padding);

}  // namespace hpctrain
