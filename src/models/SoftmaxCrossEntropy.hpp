#pragma once
// Softmax cross-entropy summed over a batch, as one operator: ATen's cross_entropy runs
// log_softmax (writing a [rows, classes] tensor of log-probabilities, kept for the backward)
// and nll_loss, and training casts bfloat16 logits to float32 before it (another full copy).
// hpctrain's CUDA kernel reads the logits in their own type, keeps one log-sum-exp per row,
// and its backward forms each probability in a register and writes the gradient directly:
// no tensor of probabilities exists at any time (models/CudaKernels.cu).
//
// What it computes is what torch::nn::functional::cross_entropy(logits.to(float), targets,
// reduction sum) computes, within float rounding (sums in another order); checked against ATen
// by `hpctrain bench kernels` and, through the CPU reference, tests/models/test_softmax_cross_entropy.cpp.
#include <torch/torch.h>

namespace hpctrain {

// Whether softmax_cross_entropy_sum runs hpctrain's CUDA kernel for these tensors: [rows, c]
// logits of float32, bfloat16 or float16 on a GPU, [rows] integer targets there.
bool softmax_cross_entropy_fused_on(const torch::Tensor& logits, const torch::Tensor& targets);

// Σ_i -log softmax(logits[i])[targets[i]] as a float32 scalar. On a GPU hpctrain's kernel where
// softmax_cross_entropy_fused_on, else ATen's; on the CPU the reference loops
// (models/LossKernels.hpp) in float.
torch::Tensor softmax_cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets);

// The same with ATen's cross_entropy on float32 logits.
torch::Tensor softmax_cross_entropy_sum_unfused(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace hpctrain
