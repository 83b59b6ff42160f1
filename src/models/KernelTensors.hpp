#pragma once
// What the operators built on hpctrain's CUDA kernels (models/AddNorm.cpp,
// models/SoftmaxCrossEntropy.cpp) share: LibTorch tensors to the kernels' plain arguments.
#include <torch/torch.h>

#include <string>

#include "util/Error.hpp"

#if HPCTRAIN_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAStream.h>

#include "models/CudaKernels.hpp"

namespace hpctrain::kernel_tensors {

// The kernels' name for a tensor type; false for a type they do not take.
inline bool kernel_type(c10::ScalarType t, cuda_kernels::Dtype& out) {
  if (t == torch::kFloat) {
    out = cuda_kernels::Dtype::Float;
  } else if (t == torch::kBFloat16) {
    out = cuda_kernels::Dtype::BFloat16;
  } else if (t == torch::kHalf) {
    out = cuda_kernels::Dtype::Half;
  } else {
    return false;
  }
  return true;
}

inline cuda_kernels::Dtype kernel_type(c10::ScalarType t) {
  cuda_kernels::Dtype out{};
  kernel_type(t, out);
  return out;
}

inline float* float_or_null(const torch::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

// The current stream of LibTorch's current device, as the kernels take it.
inline void* current_stream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}

// Throws with CUDA's message when a launch failed.
inline void check_launch(const char* error, const char* what) {
  if (error) throw RuntimeFailure(std::string(what) + ": " + error);
}

}  // namespace hpctrain::kernel_tensors
#endif

namespace hpctrain::kernel_tensors {

// A float32 contiguous copy (the tensor itself when it is one); undefined stays undefined.
inline torch::Tensor float_contiguous(const torch::Tensor& t) {
  return t.defined() ? t.to(torch::kFloat).contiguous() : t;
}

}  // namespace hpctrain::kernel_tensors
