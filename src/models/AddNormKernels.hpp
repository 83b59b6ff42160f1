#pragma once
// The CPU reference of the fused residual add + LayerNorm (models/AddNorm.hpp) over rows of d
// values, float32 in and out, sums in double. It is what the CUDA kernels
// (models/CudaKernels.cu) are checked against besides ATen, and the op's CPU path. No LibTorch.
//
//   h = x + r                                  (the new residual stream)
//   y = (h - mean) * rstd * gamma + beta       (LayerNorm of h; rstd = 1/sqrt(var + eps))
//
// Backward, with dy the gradient of y and dh_in that of h from its other uses:
//   xhat = (h - mean) * rstd,  g = dy * gamma
//   dh = dh_in + rstd * (g - mean(g) - xhat * mean(g * xhat))      (x's and r's gradient)
//   dgamma = Σ_rows dy * xhat,  dbeta = Σ_rows dy
#include <cstdint>

namespace hpctrain::kernels {

// `gamma` and `beta` may be null (no affine weights). `round_h` rounds h as the residual
// stream's type does before the statistics are taken (bfloat16/half: pass the rounding).
void add_layer_norm_forward(const float* x, const float* r, const float* gamma, const float* beta, std::int64_t rows,
                            std::int64_t d, double eps, float (*round_h)(float), float* h, float* y, float* mean,
                            float* rstd);

// `dh_in` may be null (h has no other use); dgamma and dbeta (d values each, may be null) are
// accumulated into.
void add_layer_norm_backward(const float* dy, const float* dh_in, const float* h, const float* gamma, const float* mean,
                             const float* rstd, std::int64_t rows, std::int64_t d, float* dh, double* dgamma,
                             double* dbeta);

}  // namespace hpctrain::kernels
