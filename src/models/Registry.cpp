#include <map>

#include "models/Model.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Multilayer perceptron on flattened inputs.
struct MlpImpl : ModelImpl {
  MlpImpl(const ModelConfig& c, const InputSpec& in) {
    std::int64_t width = 1;
    for (auto d : in.sample_shape) width *= d;
    for (std::size_t i = 0; i < c.hidden.size(); ++i) {
      layers->push_back(torch::nn::Linear(width, c.hidden[i]));
      if (c.batch_norm) layers->push_back(torch::nn::BatchNorm1d(c.hidden[i]));
      layers->push_back(torch::nn::ReLU());
      if (c.dropout > 0) layers->push_back(torch::nn::Dropout(c.dropout));
      width = c.hidden[i];
    }
    layers->push_back(torch::nn::Linear(width, in.outputs));
    register_module("layers", layers);
  }
  torch::Tensor forward(torch::Tensor x) override { return layers->forward(x.flatten(1)); }
  torch::nn::Sequential layers;
};

// Convolution stages (3x3 conv, optional batch norm, ReLU, 2x2 max pool), then a fully
// connected layer, dropout and the classifier.
struct CnnImpl : ModelImpl {
  CnnImpl(const ModelConfig& c, const InputSpec& in) {
    if (in.sample_shape.size() != 3) {
      throw ConfigError("model.name: cnn needs image samples [C, H, W]; this data set has " +
                        std::to_string(in.sample_shape.size()) + "-dimensional samples (use mlp)");
    }
    std::int64_t channels = in.sample_shape[0], h = in.sample_shape[1], w = in.sample_shape[2];
    for (std::size_t i = 0; i < c.channels.size(); ++i) {
      if (h < 2 || w < 2) {
        throw ConfigError("model.channels: " + std::to_string(c.channels.size()) + " pooling stages shrink a " +
                          std::to_string(in.sample_shape[1]) + "x" + std::to_string(in.sample_shape[2]) +
                          " input below 1x1; use at most " + std::to_string(i) + " stages");
      }
      features->push_back(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, c.channels[i], 3).padding(1).bias(!c.batch_norm)));
      if (c.batch_norm) features->push_back(torch::nn::BatchNorm2d(c.channels[i]));
      features->push_back(torch::nn::ReLU());
      features->push_back(torch::nn::MaxPool2d(2));
      channels = c.channels[i];
      h /= 2;
      w /= 2;
    }
    head->push_back(torch::nn::Linear(channels * h * w, c.fc_width));
    head->push_back(torch::nn::ReLU());
    if (c.dropout > 0) head->push_back(torch::nn::Dropout(c.dropout));
    head->push_back(torch::nn::Linear(c.fc_width, in.outputs));
    register_module("features", features);
    register_module("head", head);
  }
  torch::Tensor forward(torch::Tensor x) override { return head->forward(features->forward(x).flatten(1)); }
  torch::nn::Sequential features;
  torch::nn::Sequential head;
};

const std::map<std::string, ModelFactory>& registry() {
  static const std::map<std::string, ModelFactory> r = {
      {"mlp", [](const ModelConfig& c, const InputSpec& in) { return std::make_shared<MlpImpl>(c, in); }},
      {"cnn", [](const ModelConfig& c, const InputSpec& in) { return std::make_shared<CnnImpl>(c, in); }},
  };
  return r;
}

}  // namespace

ModelPtr build_model(const ModelConfig& config, const InputSpec& input) {
  const auto& r = registry();
  auto it = r.find(config.name);
  if (it == r.end()) throw ConfigError("model.name: unknown model \"" + config.name + "\"");
  return it->second(config, input);
}

std::vector<std::string> registered_models() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
  for (auto& b : module.buffers()) {
    if (b.dim() == 4) b.set_data(b.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

std::int64_t parameter_count(const torch::nn::Module& module) {
  std::int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace hpctrain
