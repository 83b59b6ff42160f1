#pragma once
// The loops behind models/NormPool.hpp: batch norm with the batch's statistics, ReLU and a
// 2x2 stride-2 max pool over NCHW planes (float32 or bfloat16), forward and backward, each over
// a range of channels (the caller spreads channels over threads). No LibTorch here: the file is
// compiled at -O3; the window loops and gradient sums take an AVX-512 form where the CPU has
// it (chosen at run time, a portable form elsewhere with the same bits), the plane sums a clone
// per instruction set (models/KernelTargets.hpp).
//
// Forward reads the input three times (mean, squared deviations, then normalize, ReLU and
// pool in one pass) and writes only the pooled output, the position of each window's maximum
// and the input value there; backward reads the quarter-size arrays once for its two sums and
// the input once more while it writes the input gradient. The unfused layers read and write
// the full-size tensors about twenty times between them (docs/benchmarks.md, "CPU step").
#include <cstdint>

#include "models/KernelPlanes.hpp"

namespace hpctrain::kernels {

// out = max over each 2x2 window of relu(x * alpha[c] + beta[c]), the first maximum in
// row-major order winning ties and NaN winning over numbers (LibTorch's CPU kernel's rule);
// where[i] (0..3, row-major within the window) is its position, at[i] the input there.
template <typename T>
void norm_relu_pool(const T* x, const Planes& s, std::int64_t c0, std::int64_t c1, const float* alpha,
                    const float* beta, T* out, std::uint8_t* where, float* at);

// Backward, first pass: with g = grad_out where out > 0 (ReLU's gradient; zero elsewhere),
// sum_g[c] = Σ g and sum_gx[c] = Σ g * (at - mean[c]) over channel c's windows.
template <typename T>
void norm_relu_pool_sums(const T* grad_out, const T* out, const float* at, const Planes& s, std::int64_t c0,
                         std::int64_t c1, const float* mean, double* sum_g, double* sum_gx);

// Backward, second pass: batch norm's input gradient, in this order of operations
//   dx = ((g - (x - mean[c]) * k[c]) - mean_g[c]) * scale[c]
// with g the window's gradient at its maximum's position and zero at every other position
// (also in a last row or column that no window covers).
template <typename T>
void norm_relu_pool_input_grad(const T* x, const T* grad_out, const T* out, const std::uint8_t* where, const Planes& s,
                               std::int64_t c0, std::int64_t c1, const float* mean, const float* mean_g, const float* k,
                               const float* scale, T* dx);

// Σ g and Σ g * (at - mean) over n values, g = grad where out > 0 (ReLU's gradient; zero
// elsewhere), in 16 float partial sums added in double (also models/NormActKernels.cpp's).
struct PlaneSums {
  double sum = 0, weighted = 0;
};
PlaneSums relu_grad_sums(const float* grad, const float* out, const float* at, std::int64_t n, float mean);

// Tests: the portable loops instead of the AVX-512 ones on a machine that has AVX-512 (both
// give the same bits).
void use_scalar_loops(bool on);

}  // namespace hpctrain::kernels
