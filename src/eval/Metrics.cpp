#include "eval/Metrics.hpp"

#include "util/Error.hpp"

namespace hpctrain {
namespace F = torch::nn::functional;

LossKind resolve_loss(const std::string& name, bool classification) {
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
  throw ConfigError("train.loss: unknown loss \"" + name + "\"");
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
  }
  return "?";
}

torch::Tensor loss_per_sample(LossKind loss, const torch::Tensor& outputs, const torch::Tensor& targets,
                              double huber_delta) {
  if (loss == LossKind::CrossEntropy) {
    return F::cross_entropy(outputs, targets, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  }
  const auto pred = outputs.reshape({-1});
  const auto y = targets.to(pred.scalar_type());
  switch (loss) {
    case LossKind::Mse:
      return F::mse_loss(pred, y, F::MSELossFuncOptions().reduction(torch::kNone));
    case LossKind::Mae:
      return F::l1_loss(pred, y, F::L1LossFuncOptions().reduction(torch::kNone));
    default:
      return F::huber_loss(pred, y, F::HuberLossFuncOptions().reduction(torch::kNone).delta(huber_delta));
  }
}

torch::Tensor loss_sum(LossKind loss, const torch::Tensor& outputs, const torch::Tensor& targets, double huber_delta) {
  if (loss == LossKind::CrossEntropy) {
    return F::cross_entropy(outputs, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  return loss_per_sample(loss, outputs, targets, huber_delta).sum();
}

EvalResult evaluate(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                    const ShardedDataset& data, LossKind loss, double huber_delta, std::int64_t batch,
                    const Communicator& comm, const std::function<void()>& between_batches) {
  torch::NoGradGuard no_grad;
  const bool was_training = module.is_training();
  module.eval();
  const bool classification = data.classification();
  const std::int64_t k = classification ? data.meta().num_classes : 0;
  const std::int64_t n = samples.size();
  auto confusion = torch::zeros({std::max<std::int64_t>(1, k * k)}, torch::kInt64);
  // loss, squared error, absolute error (original units), count
  std::vector<double> sums(4, 0.0);
  for (std::int64_t start = 0; start < n; start += batch) {
    const std::int64_t len = std::min(batch, n - start);
    auto x = data.to_input(samples.inputs.narrow(0, start, len));
    auto y = samples.targets.narrow(0, start, len);
    auto out = forward(x);
    sums[0] += loss_sum(loss, out, data.to_target(y), huber_delta).item<double>();
    if (classification) {
      confusion.index_add_(0, y * k + out.argmax(1), torch::ones({len}, torch::kInt64));
    } else {
      auto err = out.reshape({-1}).to(torch::kDouble) * data.target_std() + data.target_mean() - y.to(torch::kDouble);
      sums[1] += err.pow(2).sum().item<double>();
      sums[2] += err.abs().sum().item<double>();
    }
    if (between_batches) between_batches();
  }
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
    r.mse = sums[1] / count;
    r.mae = sums[2] / count;
  }
  return r;
}

LocalPredictions predict(torch::nn::Module& module, const Forward& forward, const Samples& samples,
                         const ShardedDataset& data, LossKind loss, double huber_delta, std::int64_t batch,
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
      losses.push_back(loss_per_sample(loss, out, data.to_target(y), huber_delta).to(torch::kDouble));
      outputs.push_back(out.reshape({-1}).to(torch::kDouble) * data.target_std() + data.target_mean());
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
