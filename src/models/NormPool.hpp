#pragma once
// A CNN stage's batch norm, ReLU and 2x2 max pool as one CPU operator in training.
//
// On CPUs these three layers cost more than the convolution before them (the default CNN,
// one thread: about 21 ms of a 41 ms traced step, against 14 ms of convolutions at 58-64% of
// the sgemm peak; bench/results/2026-12-05-cpu-ops-layers.json): each reads and writes
// full-size tensors several times, batch norm's backward alone five times. Fused, the forward reads its input three
// times and writes a quarter-size output; the backward reads quarter-size arrays once and the input once more while
// writing its gradient (models/NormPoolKernels.hpp).
//
// What it computes is what the layers compute: the same statistics (within float rounding;
// summed in another order), the same normalized values and window maxima (ties to the first
// position, as LibTorch's kernel), gradients through the same positions, running statistics
// updated as BatchNorm2d's forward updates them (tests/models/test_norm_pool.cpp). float32 and
// bfloat16 inputs (the latter from convolutions under CPU autocast, precision.mode=bf16: computed
// in float, rounded back to bfloat16 as the layers do). Elsewhere (evaluation, GPUs, other dtypes,
// channels-last inputs) the layers run as they are.
#include <torch/torch.h>

namespace hpctrain {

// Whether batch_norm_relu_pool stands in for bn -> ReLU -> MaxPool(2) on x.
bool fused_norm_pool_applies(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn);

// max_pool2d(relu(bn(x)), 2, 2), with bn in training mode; updates bn's running statistics
// and batch count as its forward would.
torch::Tensor batch_norm_relu_pool(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn);

}  // namespace hpctrain
