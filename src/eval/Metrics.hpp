#pragma once
// Losses and evaluation of a model on a rank's samples, summed over the communicator.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"
#include "config/Config.hpp"
#include "data/ShardedDataset.hpp"

namespace hpctrain {

enum class LossKind { CrossEntropy, Mse, Mae, Huber, Quantile };

// The training loss and what it needs besides outputs and targets.
struct LossSpec {
  LossKind kind = LossKind::CrossEntropy;
  double huber_delta = 1.0;
  std::vector<double> quantiles;  // Quantile: levels in (0, 1), ascending; one output each
  // Model outputs per regression target: one, or one per quantile level.
  std::int64_t outputs_per_target() const;
  // The model's output width for a data set: its classes, or per target value one output
  // per quantile level (one without quantiles).
  std::int64_t model_outputs(const DatasetMeta& meta) const;
  // The output read as the point prediction: the quantile level nearest the median (or the only one).
  std::int64_t point_column() const;
  // The levels as a tensor of `options`' device and dtype, made once per device and dtype
  // and kept: a captured training step (device.cuda_graphs) may not copy from host memory,
  // and reads the tensor it was captured with at every replay.
  const torch::Tensor& levels_tensor(const torch::TensorOptions& options) const;

 private:
  mutable std::vector<torch::Tensor> levels_;
};

// The predicted class of each row of `scores` ([n, K]): the first highest (as
// predicted_classes in eval/Scores.hpp for host values).
inline torch::Tensor predicted_classes(const torch::Tensor& scores) {
  return scores.argmax(1);
}

// train.loss (and its parameters) against the data's task ("auto": cross-entropy or MSE).
// Throws ConfigError for a loss that does not fit the task or bad quantile levels.
LossSpec resolve_loss(const TrainConfig& train, bool classification);
std::string loss_name(LossKind loss);

// Sum over the batch of the per-sample loss of `outputs` ([n, K] logits, [n, 1] values, or
// [n, Q] quantiles) against `targets` (labels, or standardized regression targets [n]).
// The quantile (pinball) loss of one sample is the mean over its levels τ of
// max(τ·e, (τ-1)·e), e = target - prediction.
torch::Tensor loss_sum(const LossSpec& loss, const torch::Tensor& outputs, const torch::Tensor& targets);
// The same per sample, [n].
torch::Tensor loss_per_sample(const LossSpec& loss, const torch::Tensor& outputs, const torch::Tensor& targets);

struct EvalResult {
  double loss = 0;  // mean training loss (regression: in standardized target units)
  std::int64_t count = 0;
  // Classification.
  double accuracy = 0;
  std::vector<std::int64_t> confusion;  // num_classes x num_classes, row = true label
  std::int64_t num_classes = 0;
  // Regression, in the original target units (of the point prediction).
  double mse = 0, mae = 0;
  // R² and Pearson's r of the point predictions over all target values (eval/Scores'
  // definitions, from sums over the ranks; NaN for fewer than two values).
  double r2 = std::numeric_limits<double>::quiet_NaN(), pearson = std::numeric_limits<double>::quiet_NaN();
  // Quantile loss: the pinball loss in the original units, and per level the fraction of
  // targets at or below its prediction (ideally the level itself).
  double quantile_loss = 0;
  std::vector<double> quantile_coverage;
  // S > 1 target values per sample (a multi-step forecast): the MAE of each step.
  std::vector<double> mae_per_step;
};

using Forward = std::function<torch::Tensor(torch::Tensor)>;

// Evaluates `module` (in eval mode, without gradients) on this rank's `samples` in
// batches of `batch`; sums over `comm`, so every rank gets the totals.
// `between_batches`, when set, runs after each batch (the scheduler's poll).
EvalResult evaluate(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                    const ShardedDataset& data, const LossSpec& loss, std::int64_t batch, const Communicator& comm,
                    const std::function<void()>& between_batches = {});

// Metric `name` of the catalog (config/MetricCatalog) from an evaluation: loss, accuracy and
// the confusion-matrix scores (eval/Scores) for classification; mse, rmse, mae, r2 and
// pearson for regression. Throws ConfigError for a metric the task does not define.
double metric_value(const EvalResult& result, const std::string& name);

// Copies `root`'s result to every rank of `comm` (a pipeline: the last stage computed it).
void share_eval_result(EvalResult& result, const Communicator& comm, int root);

// This rank's predictions on `samples`: per-sample loss (double [n]) and, for
// classification, class probabilities (double [n, K], softmax in double precision);
// for regression, point predictions in the original target units (double [n], or [n, S]
// for S target values per sample).
struct LocalPredictions {
  torch::Tensor loss;
  torch::Tensor outputs;
};
LocalPredictions predict(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                         const ShardedDataset& data, const LossSpec& loss, std::int64_t batch,
                         const std::function<void()>& between_batches = {});

}  // namespace hpctrain
