#pragma once
#include <torch/torch.h>

#include <memory>

#include "config/Config.hpp"

namespace hpctrain {

// `fused`: Adam and AdamW step through ATen's fused multi-tensor kernel (SGD always loops).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& config,
                                                        std::vector<torch::Tensor> parameters, bool fused = false);
// optimizer.fused resolved for a device: on, off, or auto (fused on a GPU).
bool use_fused_optimizer(const OptimizerConfig& config, const torch::Device& device);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace hpctrain
