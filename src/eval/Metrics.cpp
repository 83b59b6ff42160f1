#include "eval/Metrics.hpp"

namespace hpctrain {

ClassificationMetrics evaluate(torch::nn::Module& module, const std::function<torch::Tensor(torch::Tensor)>& forward,
                               const torch::Tensor& images, const torch::Tensor& labels,
                               const std::function<torch::Tensor(const torch::Tensor&)>& to_input, std::int64_t batch,
                               std::int64_t num_classes, const Communicator& comm) {
  torch::NoGradGuard no_grad;
  const bool was_training = module.is_training();
  module.eval();
  const std::int64_t n = labels.defined() ? labels.size(0) : 0;
  auto confusion = torch::zeros({num_classes * num_classes}, torch::kInt64);
  double loss_sum = 0.0;
  for (std::int64_t start = 0; start < n; start += batch) {
    const std::int64_t len = std::min(batch, n - start);
    auto x = to_input(images.narrow(0, start, len));
    auto y = labels.narrow(0, start, len);
    auto logits = forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    auto pred = logits.argmax(1);
    confusion.index_add_(0, y * num_classes + pred, torch::ones({len}, torch::kInt64));
  }
  module.train(was_training);
  std::vector<double> sums{loss_sum};
  comm.allreduce_sum(sums.data(), sums.size());
  ClassificationMetrics m;
  m.num_classes = num_classes;
  m.confusion.assign(confusion.data_ptr<std::int64_t>(), confusion.data_ptr<std::int64_t>() + confusion.numel());
  comm.allreduce_sum(m.confusion.data(), m.confusion.size());
  std::int64_t correct = 0;
  for (std::int64_t c = 0; c < num_classes; ++c) correct += m.confusion[c * num_classes + c];
  for (auto v : m.confusion) m.count += v;
  m.loss = m.count > 0 ? sums[0] / static_cast<double>(m.count) : 0.0;
  m.accuracy = m.count > 0 ? static_cast<double>(correct) / static_cast<double>(m.count) : 0.0;
  return m;
}

}  // namespace hpctrain
