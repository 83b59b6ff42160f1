#pragma once
// Classification metrics summed over ranks.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

struct ClassificationMetrics {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // share of correct predictions
  std::int64_t count = 0;
  std::vector<std::int64_t> confusion;  // num_classes x num_classes, row = true label
  std::int64_t num_classes = 0;
};

// Evaluates `model` (in eval mode, without gradients) on this rank's samples in batches
// of `batch`; sums over `comm`, so every rank gets the totals.
ClassificationMetrics evaluate(torch::nn::Module& module, const std::function<torch::Tensor(torch::Tensor)>& forward,
                               const torch::Tensor& images, const torch::Tensor& labels,
                               const std::function<torch::Tensor(const torch::Tensor&)>& to_input, std::int64_t batch,
                               std::int64_t num_classes, const Communicator& comm);

}  // namespace hpctrain
