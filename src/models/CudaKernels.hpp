#pragma once
// hpctrain's own CUDA kernels (models/CudaKernels.cu), compiled by nvcc into the build when a
// CUDA compiler is found (HPCTRAIN_WITH_CUDA_KERNELS). Plain pointers and a cudaStream_t passed
// as void*: no LibTorch and no CUDA header here, so callers compile without nvcc. Each launcher
// returns nullptr once its kernels are queued, else CUDA's message.
#include <cstdint>

namespace hpctrain::cuda_kernels {

enum class Dtype { Float, BFloat16, Half };

// Residual add + LayerNorm over rows of d values (the formulas of models/AddNormKernels.hpp).
// x and h have one type, r another (the same, or bfloat16/half with a float h), y h's type or
// float, or r's with a float h (a matrix product's input under autocast). gamma, beta: float, or null. mean, rstd:
// float per row, kept for the backward. r may be null: a LayerNorm of x alone, h then x's own
// memory (read, never written), r_type still choosing the types (y's, with a float h).
struct AddNormForward {
  const void* x;
  const void* r;
  const float* gamma;
  const float* beta;
  void* h;
  void* y;
  float* mean;
  float* rstd;
  std::int64_t rows, d;
  float eps;
  Dtype h_type, r_type, y_type;
};

// dy of y's type; dh_in (h's type) may be null; dh of h's type; dr of r's type, or null when r
// has h's type (dh is r's gradient too). dgamma/dbeta (float, d each) may be null; `partial`
// holds add_norm_partial_floats(rows, d) floats of scratch when they are not.
struct AddNormBackward {
  const void* dy;
  const void* dh_in;
  const void* h;
  const float* gamma;
  const float* mean;
  const float* rstd;
  void* dh;
  void* dr;
  float* dgamma;
  float* dbeta;
  float* partial;
  std::int64_t rows, d;
  Dtype h_type, r_type, y_type;
};

// Softmax cross-entropy over rows of c logits (float, bfloat16 or half) with int64 targets in
// [0, c): lse[i] = log Σ_j exp(logits[i, j]) (float, kept for the backward) and
// *loss_sum = Σ_i (lse[i] - logits[i, targets[i]]) (float, one value on the device, summed in
// a fixed order).
struct CrossEntropyForward {
  const void* logits;
  const std::int64_t* targets;
  float* lse;
  float* row_loss;  // rows floats of scratch
  float* loss_sum;
  std::int64_t rows, c;
  Dtype type;
};

// grad[i, j] = *grad_sum * (exp(logits[i, j] - lse[i]) - [j == targets[i]]), of the logits' type:
// the probabilities are formed in registers, never stored. grad_sum stays on the device.
struct CrossEntropyBackward {
  const void* logits;
  const std::int64_t* targets;
  const float* lse;
  const float* grad_sum;
  void* grad;
  std::int64_t rows, c;
  Dtype type;
};

const char* cross_entropy_forward(const CrossEntropyForward& a, void* stream);
const char* cross_entropy_backward(const CrossEntropyBackward& a, void* stream);

bool add_norm_supported(Dtype h, Dtype r, Dtype y);
std::int64_t add_norm_partial_floats(std::int64_t rows, std::int64_t d);
const char* add_norm_forward(const AddNormForward& a, void* stream);
const char* add_norm_backward(const AddNormBackward& a, void* stream);

}  // namespace hpctrain::cuda_kernels
