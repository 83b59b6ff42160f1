#pragma once
// The residual add and the LayerNorm after it as one operator: what a pre-norm Transformer
// block runs between its attention and its MLP (h = x + attention(...); y = LN(h)). On a GPU,
// ATen runs an add (read x and r, write h) and a layer norm (read h, write y) forward, and in
// the backward a layer norm backward and the add of the residual's gradient, each a pass over
// full-size tensors; hpctrain's kernel (models/CudaKernels.cu) does the forward in one pass over
// each row (h written and read back from cache) and the backward in one pass plus the weights'
// column sums.
//
// What it computes is what x + r and torch::layer_norm compute: h rounded to its type before
// the statistics are taken, y of h's type (float under autocast, as autocast runs layer_norm in
// float), the same gradients within float rounding (sums in another order). Checked against
// ATen by `hpctrain bench kernels` on the device at hand and, through the CPU reference, by
// tests/models/test_add_norm.cpp.
#include <torch/torch.h>

#include <utility>

namespace hpctrain {

// Whether hpctrain's CUDA kernels were compiled into this build (nvcc was found).
bool cuda_kernels_compiled();

// Whether add_layer_norm runs hpctrain's CUDA kernel for these tensors (else ATen's ops).
bool add_layer_norm_fused_on(const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& weight,
                             const torch::Tensor& bias, bool y_for_matmul = false);

// {h, y} with h = x + r and y = layer_norm(h, {d}, weight, bias, eps) over the last dimension d.
// weight and bias: float [d] (or undefined: then ATen's ops). On CUDA: hpctrain's kernel where
// add_layer_norm_fused_on, else ATen's ops; on the CPU: the reference loops
// (models/AddNormKernels.hpp) in float.
// `y_for_matmul`: y is the input of a matrix product, so under autocast it comes in autocast's
// type, rounded as the product's own cast would round the float y (the same numbers, without
// the float y and the pass that casts it; its gradient arrives in that type too).
std::pair<torch::Tensor, torch::Tensor> add_layer_norm(const torch::Tensor& x, const torch::Tensor& r,
                                                       const torch::Tensor& weight, const torch::Tensor& bias,
                                                       double eps, bool y_for_matmul = false);

// The same with ATen's operators: x + r, then torch::layer_norm (and the cast of y).
std::pair<torch::Tensor, torch::Tensor> add_layer_norm_unfused(const torch::Tensor& x, const torch::Tensor& r,
                                                               const torch::Tensor& weight, const torch::Tensor& bias,
                                                               double eps, bool y_for_matmul = false);

// The LayerNorm before the attention's QKV product: y = layer_norm(x, {d}, weight, bias, eps)
// as a matrix product's input, so under autocast of autocast's type (as y_for_matmul above).
// On CUDA with a float x under autocast, hpctrain's kernel without the add (no float y, no
// cast pass, y's gradient read in its own type) where layer_norm_for_matmul_fused_on; else
// ATen's ops (layer_norm_for_matmul_unfused); on the CPU the reference loops in float.
bool layer_norm_for_matmul_fused_on(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
torch::Tensor layer_norm_for_matmul(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                    double eps);
torch::Tensor layer_norm_for_matmul_unfused(const torch::Tensor& x, const torch::Tensor& weight,
                                            const torch::Tensor& bias, double eps);

}  // namespace hpctrain
