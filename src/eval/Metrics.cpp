#include "eval/Metrics.hpp"

#include <algorithm>
#include <cmath>

#include "config/MetricCatalog.hpp"
#include "eval/Scores.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace F = torch::nn::functional;

namespace {

LossKind loss_kind(const std::string& name, bool classification) {
  if (name == "auto") return classification ? LossKind::CrossEntropy : LossKind::Mse;
  if (name == "cross_entropy") {
    if (!classification) throw ConfigError("train.loss: cross_entropy needs classification data; this is regression");
    return LossKind::CrossEntropy;
  }
  if (classification) {
    throw ConfigError("train.loss: " + name +
                      " is a regression loss; this data set is classification (use auto or "
                      "cross_entropy)");
  }
  if (name == "mse") return LossKind::Mse;
  if (name == "mae") return LossKind::Mae;
  if (name == "huber") return LossKind::Huber;
  if (name == "quantile") return LossKind::Quantile;
  throw ConfigError("train.loss: unknown loss \"" + name + "\"");
}

}  // namespace

LossSpec resolve_loss(const TrainConfig& train, bool classification) {
  LossSpec spec;
  spec.kind = loss_kind(train.loss, classification);
  spec.huber_delta = train.huber_delta;
  if (spec.kind == LossKind::Quantile) {
    if (train.quantiles.empty()) throw ConfigError("train.quantiles: the quantile loss needs at least one level");
    for (std::size_t i = 0; i < train.quantiles.size(); ++i) {
      if (i > 0 && train.quantiles[i] <= train.quantiles[i - 1]) {
        throw ConfigError("train.quantiles: levels must be ascending and distinct; " +
                          std::to_string(train.quantiles[i]) + " follows " + std::to_string(train.quantiles[i - 1]));
      }
      spec.quantiles.push_back(static_cast<double>(train.quantiles[i]) / 100.0);
    }
  }
  return spec;
}

std::int64_t LossSpec::outputs_per_target() const {
  return kind == LossKind::Quantile ? static_cast<std::int64_t>(quantiles.size()) : 1;
}

std::int64_t LossSpec::model_outputs(const DatasetMeta& meta) const {
  return meta.num_classes > 0 ? meta.num_classes : meta.target_width * outputs_per_target();
}

const torch::Tensor& LossSpec::levels_tensor(const torch::TensorOptions& options) const {
  for (const auto& t : levels_) {
    if (t.device() == options.device() && t.dtype() == options.dtype()) return t;
  }
  levels_.push_back(torch::tensor(quantiles, options));
  return levels_.back();
}

std::int64_t LossSpec::point_column() const {
  std::int64_t best = 0;
  for (std::size_t i = 1; i < quantiles.size(); ++i) {
    if (std::abs(quantiles[i] - 0.5) < std::abs(quantiles[static_cast<std::size_t>(best)] - 0.5)) {
      best = static_cast<std::int64_t>(i);
    }
  }
  return best;
}

std::string loss_name(LossKind loss) {
  switch (loss) {
    case LossKind::CrossEntropy:
      return "cross_entropy";
    case LossKind::Mse:
      return "mse";
    case LossKind::Mae:
      return "mae";
    case LossKind::Huber:
      return "huber";
    case LossKind::Quantile:
      return "quantile";
  }
  return "?";
}

namespace {

// Pinball loss of [n, S, Q] predictions against [n, S] targets, per sample (mean over the
// S steps and the Q levels).
torch::Tensor pinball(const torch::Tensor& predictions, const torch::Tensor& targets, const LossSpec& loss) {
  const auto tau = loss.levels_tensor(predictions.options()).view({1, 1, -1});
  const auto e = targets.to(predictions.scalar_type()).unsqueeze(-1) - predictions;
  return torch::maximum(tau * e, (tau - 1) * e).mean(std::vector<std::int64_t>{1, 2});
}

}  // namespace

torch::Tensor loss_per_sample(const LossSpec& loss, const torch::Tensor& outputs, const torch::Tensor& targets) {
  if (loss.kind == LossKind::CrossEntropy) {
    return F::cross_entropy(outputs, targets, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  }
  // Regression: S target values per sample ([n] or [n, S]); the outputs hold S values, or S
  // groups of Q quantile levels. A sample's loss is the mean over its values.
  const auto n = outputs.size(0);
  const auto y = targets.reshape({n, -1}).to(outputs.scalar_type());
  if (loss.kind == LossKind::Quantile) {
    return pinball(outputs.reshape({n, y.size(1), -1}), y, loss);
  }
  const auto pred = outputs.reshape({n, -1});
  switch (loss.kind) {
    case LossKind::Mse:
      return F::mse_loss(pred, y, F::MSELossFuncOptions().reduction(torch::kNone)).mean(1);
    case LossKind::Mae:
      return F::l1_loss(pred, y, F::L1LossFuncOptions().reduction(torch::kNone)).mean(1);
    default:
      return F::huber_loss(pred, y, F::HuberLossFuncOptions().reduction(torch::kNone).delta(loss.huber_delta)).mean(1);
  }
}

torch::Tensor loss_sum(const LossSpec& loss, const torch::Tensor& outputs, const torch::Tensor& targets) {
  if (loss.kind == LossKind::CrossEntropy) {
    return F::cross_entropy(outputs, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  return loss_per_sample(loss, outputs, targets).sum();
}

namespace {
// R² and Pearson's r from n values' moments (sum y, y², p, p², p·y) and the mean squared
// error, as eval/Scores defines them: R² = 1 − SS_res/SS_tot, 1 when SS_res is 0, 0 when
// SS_tot is 0; r NaN when either side is constant; both NaN for fewer than two values.
void correlation_scores(EvalResult& r, double n, const double* m) {
  if (n < 2) return;
  const double ss_tot = std::max(0.0, m[1] - m[0] * m[0] / n);
  const double ss_res = r.mse * n;
  r.r2 = ss_res == 0 ? 1.0 : ss_tot == 0 ? 0.0 : 1.0 - ss_res / ss_tot;
  const double var_p = m[3] - m[2] * m[2] / n, cov = m[4] - m[0] * m[2] / n;
  // A side is constant when its spread vanishes against its magnitude (rounding of the sums).
  const double eps = 1e-12;
  if (ss_tot <= eps * std::max(1.0, m[1]) || var_p <= eps * std::max(1.0, m[3])) return;
  r.pearson = std::clamp(cov / std::sqrt(ss_tot * var_p), -1.0, 1.0);
}
}  // namespace

double metric_value(const EvalResult& r, const std::string& name) {
  const MetricInfo& info = metric_info(name);
  const bool classification = r.num_classes > 0;
  if ((info.task == MetricTask::Classification && !classification) ||
      (info.task == MetricTask::Regression && classification)) {
    throw ConfigError("metric " + name + " is not defined for " +
                      std::string(classification ? "classification" : "regression") + " data");
  }
  if (name == "loss") return r.loss;
  if (name == "accuracy") return r.accuracy;
  if (classification) {
    const ClassificationScores s = classification_scores(r.confusion, r.num_classes);
    if (name == "balanced_accuracy") return s.balanced_accuracy;
    if (name == "precision_macro") return s.precision_macro;
    if (name == "recall_macro") return s.recall_macro;
    if (name == "f1_macro") return s.f1_macro;
    if (name == "precision_weighted") return s.precision_weighted;
    if (name == "recall_weighted") return s.recall_weighted;
    if (name == "f1_weighted") return s.f1_weighted;
  }
  if (name == "mse") return r.mse;
  if (name == "rmse") return std::sqrt(r.mse);
  if (name == "mae") return r.mae;
  if (name == "r2") return r.r2;
  if (name == "pearson") return r.pearson;
  throw ConfigError("metric " + name + ": not computed from an evaluation");
}

EvalResult evaluate(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                    const ShardedDataset& data, const LossSpec& loss, std::int64_t batch, const Communicator& comm,
                    const std::function<void()>& between_batches) {
  torch::NoGradGuard no_grad;
  const bool was_training = module.is_training();
  module.eval();
  const bool classification = data.classification();
  const std::int64_t k = classification ? data.meta().num_classes : 0;
  const std::int64_t n = samples.size();
  auto confusion = torch::zeros({std::max<std::int64_t>(1, k * k)}, torch::kInt64);
  // loss, squared error, absolute error (original units), count, pinball loss (original
  // units), then per quantile level the targets at or below its prediction, then with S > 1
  // target values per sample the absolute error per step
  const bool quantile = loss.kind == LossKind::Quantile;
  const std::int64_t width = classification ? 1 : data.output_size();
  const std::size_t levels = loss.quantiles.size(), steps_at = 5 + levels;
  // ... and last the moments of the point predictions p and targets y for R² and Pearson's r:
  // sum y, y², p, p², p·y.
  const std::size_t moments_at = steps_at + static_cast<std::size_t>(width > 1 ? width : 0);
  std::vector<double> sums(moments_at + 5, 0.0);
  auto below = torch::zeros({static_cast<std::int64_t>(levels)}, torch::kDouble);
  auto step_error = torch::zeros({width}, torch::kDouble);
  for (std::int64_t start = 0; start < n; start += batch) {
    const std::int64_t len = std::min(batch, n - start);
    auto x = data.to_input(samples.inputs.narrow(0, start, len));
    auto y = samples.targets.narrow(0, start, len);
    auto out = forward(x);
    sums[0] += loss_sum(loss, out, data.to_target(y)).item<double>();
    if (classification) {
      confusion.index_add_(0, y * k + predicted_classes(out), torch::ones({len}, torch::kInt64));
    } else {
      // [len, S, outputs per value] in the original units.
      const auto pred = out.reshape({len, width, -1}).to(torch::kDouble) * data.target_std() + data.target_mean();
      const auto truth = y.reshape({len, width}).to(torch::kDouble);
      const auto point = pred.select(2, loss.point_column());
      auto err = point - truth;
      sums[moments_at] += truth.sum().item<double>();
      sums[moments_at + 1] += truth.pow(2).sum().item<double>();
      sums[moments_at + 2] += point.sum().item<double>();
      sums[moments_at + 3] += point.pow(2).sum().item<double>();
      sums[moments_at + 4] += (point * truth).sum().item<double>();
      sums[1] += err.pow(2).sum().item<double>();
      sums[2] += err.abs().sum().item<double>();
      if (quantile) {
        sums[4] += pinball(pred, truth, loss).sum().item<double>();
        below += truth.unsqueeze(-1).le(pred).sum(std::vector<std::int64_t>{0, 1});
      }
      if (width > 1) step_error += err.abs().sum(0);
    }
    if (between_batches) between_batches();
  }
  std::copy_n(below.data_ptr<double>(), levels, sums.begin() + 5);
  if (width > 1)
    std::copy_n(step_error.data_ptr<double>(), width, sums.begin() + static_cast<std::ptrdiff_t>(steps_at));
  sums[3] = static_cast<double>(n);
  module.train(was_training);
  comm.allreduce_sum(sums.data(), sums.size());
  EvalResult r;
  r.count = static_cast<std::int64_t>(sums[3]);
  const double count = std::max(1.0, sums[3]);
  r.loss = sums[0] / count;
  if (classification) {
    r.num_classes = k;
    r.confusion.assign(confusion.data_ptr<std::int64_t>(), confusion.data_ptr<std::int64_t>() + k * k);
    comm.allreduce_sum(r.confusion.data(), r.confusion.size());
    std::int64_t correct = 0;
    for (std::int64_t c = 0; c < k; ++c) correct += r.confusion[c * k + c];
    r.accuracy = static_cast<double>(correct) / count;
  } else {
    const double values = count * static_cast<double>(width);
    r.mse = sums[1] / values;
    r.mae = sums[2] / values;
    if (quantile) {
      r.quantile_loss = sums[4] / count;
      for (std::size_t q = 0; q < levels; ++q) r.quantile_coverage.push_back(sums[5 + q] / values);
    }
    for (std::int64_t s = 0; width > 1 && s < width; ++s) {
      r.mae_per_step.push_back(sums[steps_at + static_cast<std::size_t>(s)] / count);
    }
    correlation_scores(r, values, sums.data() + moments_at);
  }
  return r;
}

void share_eval_result(EvalResult& r, const Communicator& comm, int root) {
  if (comm.size() == 1) return;
  // Scalars, then the three lists each preceded by its length, as doubles (counts below 2^53).
  std::vector<double> packed{r.loss,          static_cast<double>(r.count),
                             r.accuracy,      static_cast<double>(r.num_classes),
                             r.mse,           r.mae,
                             r.quantile_loss, r.r2,
                             r.pearson};
  auto pack = [&](const auto& values) {
    packed.push_back(static_cast<double>(values.size()));
    for (auto v : values) packed.push_back(static_cast<double>(v));
  };
  pack(r.confusion);
  pack(r.quantile_coverage);
  pack(r.mae_per_step);
  std::int64_t size = static_cast<std::int64_t>(packed.size());
  comm.broadcast(&size, sizeof(size), root);
  packed.resize(static_cast<std::size_t>(size));
  comm.broadcast(packed.data(), packed.size() * sizeof(double), root);
  std::size_t at = 0;
  auto next = [&] { return packed[at++]; };
  r.loss = next();
  r.count = static_cast<std::int64_t>(next());
  r.accuracy = next();
  r.num_classes = static_cast<std::int64_t>(next());
  r.mse = next();
  r.mae = next();
  r.quantile_loss = next();
  r.r2 = next();
  r.pearson = next();
  auto unpack = [&](auto& values) {
    values.resize(static_cast<std::size_t>(next()));
    for (auto& v : values) v = static_cast<std::remove_reference_t<decltype(v)>>(next());
  };
  unpack(r.confusion);
  unpack(r.quantile_coverage);
  unpack(r.mae_per_step);
}

LocalPredictions predict(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                         const ShardedDataset& data, const LossSpec& loss, std::int64_t batch,
                         const std::function<void()>& between_batches) {
  torch::NoGradGuard no_grad;
  const bool was_training = module.is_training();
  module.eval();
  const std::int64_t n = samples.size();
  std::vector<torch::Tensor> losses, outputs;
  for (std::int64_t start = 0; start < n; start += batch) {
    const std::int64_t len = std::min(batch, n - start);
    auto out = forward(data.to_input(samples.inputs.narrow(0, start, len)));
    auto y = samples.targets.narrow(0, start, len);
    if (data.classification()) {
      // In double precision, so the loss equals -log of the saved probabilities.
      auto log_p = torch::log_softmax(out.to(torch::kDouble), 1);
      losses.push_back(-log_p.gather(1, y.unsqueeze(1)).squeeze(1));
      outputs.push_back(log_p.exp());
    } else {
      losses.push_back(loss_per_sample(loss, out, data.to_target(y)).to(torch::kDouble));
      const auto width = data.output_size();
      const auto point = out.reshape({len, width, -1}).select(2, loss.point_column()).to(torch::kDouble);
      outputs.push_back((width > 1 ? point : point.reshape({len})) * data.target_std() + data.target_mean());
    }
    if (between_batches) between_batches();
  }
  module.train(was_training);
  LocalPredictions p;
  const std::int64_t k = data.classification() ? data.meta().num_classes : 0;
  p.loss = n > 0 ? torch::cat(losses) : torch::zeros({0}, torch::kDouble);
  p.outputs =
      n > 0 ? torch::cat(outputs) : (k > 0 ? torch::zeros({0, k}, torch::kDouble) : torch::zeros({0}, torch::kDouble));
  return p;
}

}  // namespace hpctrain
