#pragma once
// The CPU reference of the fused softmax cross-entropy (models/SoftmaxCrossEntropy.hpp), float
// logits, sums in double. What the CUDA kernels (models/CudaKernels.cu) are checked against
// besides ATen, and the op's CPU path. No LibTorch.
//
//   lse[i] = log Σ_j exp(z[i, j])              loss = Σ_i (lse[i] - z[i, t[i]])
//   dz[i, j] = g * (exp(z[i, j] - lse[i]) - [j == t[i]])
#include <cstdint>

namespace hpctrain::kernels {

// Returns the summed loss; a target outside [0, c) makes it NaN.
double cross_entropy_forward(const float* logits, const std::int64_t* targets, std::int64_t rows, std::int64_t c,
                             float* lse);

void cross_entropy_backward(const float* logits, const std::int64_t* targets, const float* lse, std::int64_t rows,
                            std::int64_t c, float g, float* grad);

}  // namespace hpctrain::kernels
