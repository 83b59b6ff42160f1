#include "models/ModelParts.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Multilayer perceptron on flattened inputs; each hidden layer (linear, normalization,
// ReLU, dropout) is a block for checkpointing and a pipeline piece. Stem: the flattening
// (no parameters); head: the last linear layer.
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
      if (c.dropout > 0) layers->push_back(CounterDropout(c.dropout, c.fused_kernels));
      add_sequential_stage(layers, "layers", begin, layers->size());
      width = c.hidden[i];
    }
    assign_piece("layers." + std::to_string(layers->size()), pipeline_blocks() + 1);
    layers->push_back(torch::nn::Linear(width, in.outputs));
    register_module("layers", layers);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override { return run_pieces(std::move(x)); }
  std::int64_t pipeline_blocks() const override { return static_cast<std::int64_t>(stages_.size()); }
  torch::Tensor run_piece(std::int64_t piece, torch::Tensor x) override {
    check_piece(piece);
    if (piece == 0) return x.flatten(1);
    if (piece <= pipeline_blocks()) return stage(static_cast<std::size_t>(piece - 1), x);
    return (layers->end() - 1)->forward(x);
  }
  torch::nn::Sequential layers;
};

}  // namespace

ModelPtr make_mlp(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
  return std::make_shared<MlpImpl>(c, in, group);
}

}  // namespace hpctrain
