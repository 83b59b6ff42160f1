#pragma once
// Batch norm, an optional residual added, and ReLU as one CPU operator in training: what a
// ResNet runs after most of its convolutions (conv -> norm -> ReLU inside a block, and
// relu(norm(conv(...)) + shortcut) at its end).
//
// On CPUs the three layers cost a quarter of a small ResNet's step (batch norm 7.4 + 6.6 ms,
// ReLU 2.5 + 2.1 ms, the add 1.6 ms of a 76 ms traced step, one thread;
// bench/results/2026-12-05-cpu-ops-2.json): each reads and writes full-size tensors. Fused, the
// forward reads its input three times (two for the statistics) and the residual once, and writes
// once; the backward reads three arrays twice and writes the input's and the residual's
// gradients (models/NormActKernels.hpp).
//
// What it computes is what the layers compute: the same statistics (within float rounding;
// summed in another order), outputs, and gradients (ReLU's through positions whose output is
// positive, as LibTorch's threshold_backward, which also passes it where the output is NaN); running statistics updated
// as BatchNorm2d's forward updates them (tests/models/test_norm_act.cpp). float32 and bfloat16 inputs (the latter from
// convolutions under CPU autocast: normalized in float, rounded to bfloat16 before and after the residual is added, as
// the layers' outputs are). Elsewhere (evaluation, GPUs, other dtypes, channels-last inputs) the layers run as they
// are.
#include <torch/torch.h>

namespace hpctrain {

// Whether batch_norm_act stands in for relu(bn(x) [+ residual]). `residual` may be undefined.
bool fused_norm_act_applies(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn,
                            const torch::Tensor& residual = {});

// relu(bn(x) + residual) (without the residual when it is undefined), bn in training mode;
// updates bn's running statistics and batch count as its forward would.
torch::Tensor batch_norm_act(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn,
                             const torch::Tensor& residual = {});

// Runs `seq`'s modules in order on x, each batch norm followed by a ReLU as batch_norm_act where
// that applies (the layers as they are elsewhere). With `residual` defined it returns
// relu(seq(x) + residual), a last batch norm fused with the add and the ReLU where that applies.
torch::Tensor run_fusing_norm_act(torch::nn::Sequential& seq, torch::Tensor x, const torch::Tensor& residual = {});

}  // namespace hpctrain
