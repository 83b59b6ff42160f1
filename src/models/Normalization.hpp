#pragma once
// The normalization layers a model may choose (model.norm): batch norm with statistics per
// rank, batch norm synchronized across the data-parallel group, layer norm, or none.
//
// Synchronized batch norm normalizes with the mean and variance of the whole global batch:
// in training each forward sums per-channel statistics over the group (two small
// reductions: the sums, then the squared deviations from the global mean, which avoids
// E[x²] - E[x]² cancellation) and each backward sums the two per-channel gradient terms.
// With the global batch split over ranks it computes what batch norm computes on the whole
// batch on one rank (tests/models/test_sync_batch_norm.cpp). Evaluation uses the running
// statistics, which then agree on every rank without averaging. Parameters and buffers
// carry batch norm's names, so checkpoints and exports read as plain batch norm.
#include <torch/torch.h>

#include <functional>
#include <string>

namespace hpctrain {

// Sums `values` (1-D, contiguous, float64, on the model's device) element-wise over the
// data-parallel group, in place, on every rank. Every rank calls it at the same points in the
// same order. The sum may still be in flight when it returns, provided that work queued on the
// device afterwards sees its result (NCCL on the compute stream's order): the layer never reads
// it on the host. Empty: one rank (local sums).
using GroupSum = std::function<void(torch::Tensor& values)>;

struct SyncBatchNormImpl : torch::nn::Module {
  SyncBatchNormImpl(std::int64_t channels, GroupSum group, double eps = 1e-5, double momentum = 0.1);
  // x: [N, C, ...]; statistics over every dimension but C.
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  GroupSum group;
  double eps, momentum;
};
TORCH_MODULE(SyncBatchNorm);

// The layer for model.norm `kind` ("batch", "sync_batch", "layer", "none") after a layer with
// `channels` outputs and `spatial` dimensions after them (0: features [N, C]; 1: series
// [N, C, T]; 2: images [N, C, H, W]). Layer norm is LayerNorm over the features, or GroupNorm
// with one group (over channels and positions) for series and images; none is Identity.
torch::nn::AnyModule norm_layer(const std::string& kind, std::int64_t channels, int spatial, const GroupSum& group);

}  // namespace hpctrain
