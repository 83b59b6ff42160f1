#pragma once
#include <torch/torch.h>

#include <memory>

#include "config/Config.hpp"

namespace hpctrain {

// `fused`: Adam and AdamW step through ATen's fused multi-tensor kernel (SGD always loops).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& config,
                                                        std::vector<torch::Tensor> parameters, bool fused = false);
// optimizer.fused resolved: on or auto (fused, on CPUs and GPUs alike), or off.
bool use_fused_optimizer(const OptimizerConfig& config);
// Sets every group's rate (and the fused optimizer's rate tensor, when it reads one).
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// The fused Adam/AdamW keeps its step counts on the parameters' device and can take a step
// without any host synchronization: what fp16 loss scaling without a wait per step and
// CUDA graphs need. These return false (and do nothing) for other optimizers.
bool is_fused(const torch::optim::Optimizer& optimizer);
// The next step() skips every update, step count included, on the device when the
// one-element float `found_inf` is nonzero (torch.amp.GradScaler's rule for fused optimizers).
bool skip_next_step_on(torch::optim::Optimizer& optimizer, const torch::Tensor& found_inf);
// From now on the learning rate is read from a tensor on the device, written by
// set_learning_rate: a captured step replays with the rate of the moment.
bool read_learning_rate_from_device(torch::optim::Optimizer& optimizer);
// Copies the device step counts into LibTorch's per-parameter state (a synchronization):
// before the state is saved, after steps that skipped or replayed on the device.
void synchronize_optimizer_state(torch::optim::Optimizer& optimizer);

}  // namespace hpctrain
