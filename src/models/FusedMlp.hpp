#pragma once
// A Transformer block's MLP, fc2(gelu_tanh(fc1(x))), as one autograd operator whose matrix
// products carry the bias, the GELU and their gradients in cuBLASLt epilogues
// (models/GemmEpilogue.hpp): forward, fc1's GEMM adds the bias, applies the GELU and also writes
// its input (kept for the backward); backward, the GEMM of fc2's input gradient applies the
// GELU's derivative and sums fc1's bias gradient, and fc2's weight gradient GEMM sums fc2's bias
// gradient. ATen runs each of these as a separate pass over a [tokens, hidden] tensor (the GELU,
// its backward, two bias-gradient reductions).
//
// In evaluation (no gradients) on a GPU, fc1 is ATen's _addmm_activation: its GEMM with the bias
// and GELU epilogue, keeping nothing. The GELU is the tanh approximation (GPT-2's,
// model.gelu=tanh), the one cuBLASLt has. The
// products run in the autocast type where autocast is on (as ATen's linear under autocast),
// else in x's type; the gradients come back in each input's own type. Where cuBLASLt offers no
// algorithm, and on CPUs, each step runs ATen's operators instead (the same formulas), so the
// operator's own backward is checked on CPUs against autograd's (tests/models/test_fused_mlp.cpp)
// and the epilogues on a GPU by `hpctrain bench kernels`.
#include <torch/torch.h>

namespace hpctrain {

// Whether mlp_gelu_tanh takes its cuBLASLt path for these tensors (else ATen's linear and gelu).
bool mlp_gelu_fused_on(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                       const torch::Tensor& w2, const torch::Tensor& b2);

// fc2(gelu_tanh(fc1(x))) over x's last dimension as the operator above; w1 [hidden, d],
// b1 [hidden], w2 [out, hidden], b2 [out].
torch::Tensor mlp_gelu_tanh(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                            const torch::Tensor& w2, const torch::Tensor& b2);

// The same with ATen's operators and autograd: linear, gelu(approximate="tanh"), linear.
torch::Tensor mlp_gelu_tanh_unfused(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                                    const torch::Tensor& w2, const torch::Tensor& b2);

}  // namespace hpctrain
