#pragma once
// Losses and evaluation of a model on a rank's samples, summed over the communicator.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"
#include "data/ShardedDataset.hpp"

namespace hpctrain {

enum class LossKind { CrossEntropy, Mse, Mae, Huber };
// train.loss against the data's task ("auto": cross-entropy or MSE). Throws ConfigError
// for a loss that does not fit the task.
LossKind resolve_loss(const std::string& name, bool classification);
std::string loss_name(LossKind loss);

// Sum over the batch of the per-sample loss of `outputs` ([n, K] logits or [n, 1] values)
// against `targets` (labels, or standardized regression targets).
torch::Tensor loss_sum(LossKind loss, const torch::Tensor& outputs, const torch::Tensor& targets, double huber_delta);
// The same per sample, [n].
torch::Tensor loss_per_sample(LossKind loss, const torch::Tensor& outputs, const torch::Tensor& targets,
                              double huber_delta);

struct EvalResult {
  double loss = 0;  // mean training loss (regression: in standardized target units)
  std::int64_t count = 0;
  // Classification.
  double accuracy = 0;
  std::vector<std::int64_t> confusion;  // num_classes x num_classes, row = true label
  std::int64_t num_classes = 0;
  // Regression, in the original target units.
  double mse = 0, mae = 0;
};

using Forward = std::function<torch::Tensor(torch::Tensor)>;

// Evaluates `module` (in eval mode, without gradients) on this rank's `samples` in
// batches of `batch`; sums over `comm`, so every rank gets the totals.
// `between_batches`, when set, runs after each batch (the scheduler's poll).
EvalResult evaluate(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                    const ShardedDataset& data, LossKind loss, double huber_delta, std::int64_t batch,
                    const Communicator& comm, const std::function<void()>& between_batches = {});

// This rank's predictions on `samples`: per-sample loss (double [n]) and, for
// classification, class probabilities (double [n, K], softmax in double precision);
// for regression, predictions in the original target units (double [n]).
struct LocalPredictions {
  torch::Tensor loss;
  torch::Tensor outputs;
};
LocalPredictions predict(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                         const ShardedDataset& data, LossKind loss, double huber_delta, std::int64_t batch,
                         const std::function<void()>& between_batches = {});

}  // namespace hpctrain
