#pragma once
// Matrix products with cuBLASLt epilogues: the bias, the GELU (tanh approximation, the only one
// cuBLASLt has) and their gradients computed in the GEMM's epilogue, on the accumulator in
// registers, instead of as separate passes over the product in memory. What a Transformer MLP
// (fc1, GELU, fc2; models/FusedMlp.hpp) needs, on 2-D row-major tensors of one type (float32,
// bfloat16 or float16), contiguous, on one GPU:
//
//   forward   h = gelu(x w^T + b), keeping pre = x w^T + b for the backward    (GELU_AUX_BIAS)
//   backward  dpre = (dy w2) * gelu'(pre), db = column sums of dpre            (DGELU_BGRAD)
//             dw2 = dy^T h, db2 = column sums of dy                            (BGRADB)
//
// Each returns false, leaving its outputs undefined, where cuBLASLt offers no algorithm for the
// shapes, types and alignments (or the build has no CUDA): the caller then runs ATen's operators.
// The algorithm cuBLASLt's heuristic picks is kept per shape, so a step queries it once.
#include <torch/torch.h>

namespace hpctrain {

// Whether this build calls cuBLASLt (a CUDA LibTorch) and the process has its entry points.
bool gemm_epilogues_available();

// x [m, k], w [n, k], b [n] -> h, pre [m, n]. n a multiple of 8 (cuBLASLt's rule for pre).
bool linear_gelu_lt(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, torch::Tensor& h,
                    torch::Tensor& pre);

// dy [m, n2], w2 [n2, n], pre [m, n] -> dpre [m, n], db [n].
bool matmul_dgelu_bgrad_lt(const torch::Tensor& dy, const torch::Tensor& w2, const torch::Tensor& pre,
                           torch::Tensor& dpre, torch::Tensor& db);

// dy [m, n2], h [m, n] -> dw [n2, n] = dy^T h, db [n2] = column sums of dy.
bool weight_grad_bgrad_lt(const torch::Tensor& dy, const torch::Tensor& h, torch::Tensor& dw, torch::Tensor& db);

}  // namespace hpctrain
