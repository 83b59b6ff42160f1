#include "models/ModelParts.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Multilayer perceptron on flattened inputs; each hidden layer (linear, normalization,
// ReLU, dropout) is a block for checkpointing.
struct MlpImpl : StagedModel {
  MlpImpl(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
    std::int64_t width = 1;
    for (auto d : in.sample_shape) width *= d;
    const auto norm = mlp_cnn_norm(c);
    for (std::size_t i = 0; i < c.hidden.size(); ++i) {
      const auto begin = layers->size();
      layers->push_back(torch::nn::Linear(width, c.hidden[i]));
      if (norm != "none") layers->push_back(norm_layer(norm, c.hidden[i], 0, group));
      layers->push_back(torch::nn::ReLU());
      if (c.dropout > 0) layers->push_back(torch::nn::Dropout(c.dropout));
      add_sequential_stage(*this, layers, begin, layers->size());
      width = c.hidden[i];
    }
    layers->push_back(torch::nn::Linear(width, in.outputs));
    register_module("layers", layers);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = x.flatten(1);
    for (std::size_t i = 0; i < stages_.size(); ++i) x = stage(i, x);
    return (layers->end() - 1)->forward(x);
  }
  torch::nn::Sequential layers;
};

}  // namespace

ModelPtr make_mlp(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
  return std::make_shared<MlpImpl>(c, in, group);
}

}  // namespace hpctrain
