#pragma once
// The loops behind models/NormAct.hpp: batch norm with the batch's statistics, an optional
// residual added, then ReLU, over NCHW planes (float32 or bfloat16), forward and backward, each
// over a range of channels (the caller spreads channels over threads). No LibTorch here: the
// file is compiled at -O3, each plane loop one clone per instruction set
// (models/KernelTargets.hpp); the moments are models/KernelPlanes.hpp's.
//
// Forward reads the input three times (mean, squared deviations, then normalize, add and ReLU
// in one pass, reading the residual there) and writes the output once. Backward reads the
// output gradient, the output and the input once for its two sums, writing the residual's
// gradient on the way, and once more while it writes the input gradient. The layers (batch
// norm, add, ReLU) read and write full-size tensors about sixteen times between them.
#include <cstdint>

#include "models/KernelPlanes.hpp"

namespace hpctrain::kernels {

// out = relu(x * alpha[c] + beta[c] (+ residual)), for channels [c0, c1). For bfloat16 the
// normalized value is rounded before the residual is added and the sum rounded again, as the
// layers' bfloat16 outputs are. `residual` may be null.
template <typename T>
void norm_act(const T* x, const T* residual, const Planes& s, std::int64_t c0, std::int64_t c1, const float* alpha,
              const float* beta, T* out);

// Backward, first pass: with g = grad_out where out > 0 (ReLU's gradient; zero elsewhere),
// sum_g[c] = Σ g and sum_gx[c] = Σ g * (x - mean[c]); g itself is the residual's gradient,
// written to grad_residual unless that is null.
template <typename T>
void norm_act_sums(const T* grad_out, const T* out, const T* x, const Planes& s, std::int64_t c0, std::int64_t c1,
                   const float* mean, double* sum_g, double* sum_gx, T* grad_residual);

// Backward, second pass: batch norm's input gradient, in LibTorch's order of operations
//   dx = ((g - (x - mean[c]) * k[c]) - mean_g[c]) * scale[c]
// with g as in norm_act_sums.
template <typename T>
void norm_act_input_grad(const T* x, const T* grad_out, const T* out, const Planes& s, std::int64_t c0, std::int64_t c1,
                         const float* mean, const float* mean_g, const float* k, const float* scale, T* dx);

}  // namespace hpctrain::kernels
