#pragma once
// Every architecture is a torch::nn::Module with forward(x) -> outputs (class logits or a regression
// value per sample), built from config
// by the registry.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/Config.hpp"
#include "models/Normalization.hpp"

namespace hpctrain {

struct InputSpec {
  std::vector<std::int64_t> sample_shape;  // C, H, W for images; F for features
  std::int64_t outputs = 0;                // classes, or 1 for regression
};

struct ModelImpl : torch::nn::Module {
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
using ModelPtr = std::shared_ptr<ModelImpl>;

using ModelFactory = std::function<ModelPtr(const ModelConfig&, const InputSpec&, const GroupSum&)>;

// Builds `config.name`; throws ConfigError for an unknown name or a shape that does not fit.
// `group` sums the statistics of synchronized batch norm (model.norm=sync_batch) over the
// data-parallel group; without it those layers use their rank's batch alone.
ModelPtr build_model(const ModelConfig& config, const InputSpec& input, const GroupSum& group = {});
std::vector<std::string> registered_models();
std::int64_t parameter_count(const torch::nn::Module& module);
// Moves 4-D parameters and buffers to channels-last memory format (in place, same values).
void to_channels_last(torch::nn::Module& module);

}  // namespace hpctrain
