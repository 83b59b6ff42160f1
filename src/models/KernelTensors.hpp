#pragma once
// What the operators built on hpctrain's CUDA kernels (models/AddNorm.cpp,
// models/SoftmaxCrossEntropy.cpp) share: LibTorch tensors to the kernels' plain arguments.
#include <torch/torch.h>

#include <string>

#include "util/Error.hpp"

#if HPCTRAIN_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
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

// The same for a type the caller checked; any other is an error, never read as another type.
inline cuda_kernels::Dtype kernel_type(c10::ScalarType t) {
  cuda_kernels::Dtype out{};
  TORCH_CHECK(kernel_type(t, out), "hpctrain's CUDA kernels: unsupported tensor type ", t);
  return out;
}

inline float* float_or_null(const torch::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

// The current stream of `t`'s device, as the kernels take it (launch under a CUDAGuard for
// that device: ATen's operators guard themselves, these launches do not).
inline void* current_stream(const torch::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Throws with CUDA's message when a launch failed.
inline void check_launch(const char* error, const char* what) {
  if (error) throw RuntimeFailure(std::string(what) + ": " + error);
}

}  // namespace hpctrain::kernel_tensors
#endif

namespace hpctrain::kernel_tensors {

// The error of a path that needs the kernels in a build without them (unreachable: the
// operators check *_fused_on first).
[[noreturn]] inline void no_kernels(const char* what) {
  throw RuntimeFailure(std::string(what) + ": this build has no CUDA kernels of hpctrain's");
}

// A float32 contiguous copy (the tensor itself when it is one); undefined stays undefined.
inline torch::Tensor float_contiguous(const torch::Tensor& t) {
  return t.defined() ? t.to(torch::kFloat).contiguous() : t;
}

}  // namespace hpctrain::kernel_tensors
