#include "models/ModelParts.hpp"
#include "models/NormPool.hpp"
#include "models/Pooling.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Convolution stages (3x3 conv, optional normalization, ReLU, 2x2 max pool; each a block for
// checkpointing and a pipeline piece), then a fully connected layer, dropout and the
// classifier (the head piece, with the flattening). The stem piece passes the images on.
struct CnnImpl : StagedModel {
  CnnImpl(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
    if (in.sample_shape.size() != 3) {
      throw ConfigError("model.name: cnn needs image samples [C, H, W]; this data set has " +
                        std::to_string(in.sample_shape.size()) + "-dimensional samples (use mlp)");
    }
    std::int64_t channels = in.sample_shape[0], h = in.sample_shape[1], w = in.sample_shape[2];
    const auto norm = mlp_cnn_norm(c);
    for (std::size_t i = 0; i < c.channels.size(); ++i) {
      if (h < 2 || w < 2) {
        throw ConfigError("model.channels: " + std::to_string(c.channels.size()) + " pooling stages shrink a " +
                          std::to_string(in.sample_shape[1]) + "x" + std::to_string(in.sample_shape[2]) +
                          " input below 1x1; use at most " + std::to_string(i) + " stages");
      }
      const auto begin = features->size();
      torch::nn::Conv2d conv(torch::nn::Conv2dOptions(channels, c.channels[i], 3).padding(1).bias(norm == "none"));
      features->push_back(conv);
      if (norm != "none") features->push_back(norm_layer(norm, c.channels[i], 2, group));
      features->push_back(torch::nn::ReLU());
      features->push_back(MaxPool(2));
      add_sequential_stage(features, "features", begin, features->size(),
                           c.fused_kernels ? fused_stage(conv, begin) : StageBlock::Run{});
      channels = c.channels[i];
      h /= 2;
      w /= 2;
    }
    head->push_back(torch::nn::Linear(channels * h * w, c.fc_width));
    head->push_back(torch::nn::ReLU());
    if (c.dropout > 0) head->push_back(CounterDropout(c.dropout, c.fused_kernels));
    head->push_back(torch::nn::Linear(c.fc_width, in.outputs));
    register_module("features", features);
    register_module("head", head);
    assign_piece("head", pipeline_blocks() + 1);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override { return run_pieces(std::move(x)); }
  std::int64_t pipeline_blocks() const override { return static_cast<std::int64_t>(stages_.size()); }
  torch::Tensor run_piece(std::int64_t piece, torch::Tensor x) override {
    check_piece(piece);
    if (piece == 0) return x;
    if (piece <= pipeline_blocks()) return stage(static_cast<std::size_t>(piece - 1), x);
    return head->forward(x.flatten(1));
  }
  torch::nn::Sequential features;
  torch::nn::Sequential head;

 private:
  // With batch norm, the stage conv -> norm -> ReLU -> pool runs the last three as one
  // operator where that applies (models/NormPool.hpp), the layers as they are elsewhere.
  StageBlock::Run fused_stage(torch::nn::Conv2d conv, std::size_t begin) {
    auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(features->ptr(begin + 1));
    if (!bn) return {};
    auto seq = features;
    return [conv, bn, seq, begin](const torch::Tensor& x) mutable {
      auto y = conv->forward(x);
      if (fused_norm_pool_applies(y, *bn)) return batch_norm_relu_pool(y, *bn);
      for (auto it = seq->begin() + begin + 1; it != seq->begin() + begin + 4; ++it) y = it->forward(y);
      return y;
    };
  }
};

}  // namespace

ModelPtr make_cnn(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
  return std::make_shared<CnnImpl>(c, in, group);
}

}  // namespace hpctrain
