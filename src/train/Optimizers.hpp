#pragma once
#include <torch/torch.h>

#include <memory>

#include "config/Config.hpp"

namespace hpctrain {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& config,
                                                        std::vector<torch::Tensor> parameters);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace hpctrain
