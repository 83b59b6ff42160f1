#include "models/ModelParts.hpp"
#include "models/NormAct.hpp"
#include "models/Pooling.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// A residual block: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion), with a
// 1x1 projection on the shortcut when the shape changes.
struct ResidualBlock : BlockImpl {
  ResidualBlock(std::int64_t in, std::int64_t planes, std::int64_t stride, bool bottleneck, const std::string& norm,
                const GroupSum& group, bool fused)
      : fused(fused) {
    const bool bias = norm == "none";
    const std::int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      body->push_back(conv(in, planes, 1, 1, bias));
      body->push_back(conv_norm(norm, group, planes));
      body->push_back(torch::nn::ReLU());
      body->push_back(conv(planes, planes, 3, stride, bias));
      body->push_back(conv_norm(norm, group, planes));
      body->push_back(torch::nn::ReLU());
      body->push_back(conv(planes, out, 1, 1, bias));
      body->push_back(conv_norm(norm, group, out));
    } else {
      body->push_back(conv(in, planes, 3, stride, bias));
      body->push_back(conv_norm(norm, group, planes));
      body->push_back(torch::nn::ReLU());
      body->push_back(conv(planes, planes, 3, 1, bias));
      body->push_back(conv_norm(norm, group, planes));
    }
    register_module("body", body);
    if (stride != 1 || in != out) {
      shortcut->push_back(conv(in, out, 1, stride, bias));
      shortcut->push_back(conv_norm(norm, group, out));
      register_module("shortcut", shortcut);
    }
  }
  torch::Tensor forward(torch::Tensor x) override {
    auto skip = shortcut->size() > 0 ? shortcut->forward(x) : x;
    // On CPUs batch norm, the add and ReLU run as one operator where they apply (models/NormAct.hpp).
    if (fused) return run_fusing_norm_act(body, x, skip);
    return torch::relu(body->forward(x) + skip);
  }
  bool fused;
  torch::nn::Sequential body;
  torch::nn::Sequential shortcut;
};

// ResNet (He et al.): a CIFAR (3x3) or ImageNet (7x7 stride 2 + max pool) stem, stages of
// residual blocks (every stage after the first halves the resolution and doubles the
// channels), global average pooling and the classifier. Pipeline pieces: the stem, each
// residual block, the head (pooling, dropout, classifier).
struct ResNetImpl : ModelImpl {
  ResNetImpl(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
    if (in.sample_shape.size() != 3) {
      throw ConfigError("model.name: resnet needs image samples [C, H, W]; this data set has " +
                        std::to_string(in.sample_shape.size()) + "-dimensional samples");
    }
    const bool bias = c.norm == "none";
    fused = c.fused_kernels;
    if (c.stem == "imagenet") {
      stem->push_back(conv(in.sample_shape[0], c.width, 7, 2, bias));
      stem->push_back(conv_norm(c.norm, group, c.width));
      stem->push_back(torch::nn::ReLU());
      stem->push_back(MaxPool(3, 2, 1));
    } else {
      stem->push_back(conv(in.sample_shape[0], c.width, 3, 1, bias));
      stem->push_back(conv_norm(c.norm, group, c.width));
      stem->push_back(torch::nn::ReLU());
    }
    register_module("stem", stem);
    assign_piece("stem", 0);
    std::int64_t channels = c.width;
    for (std::size_t stage = 0; stage < c.blocks.size(); ++stage) {
      const std::int64_t planes = c.width << stage;
      for (std::int64_t b = 0; b < c.blocks[stage]; ++b) {
        const std::int64_t stride = stage > 0 && b == 0 ? 2 : 1;
        auto block = std::make_shared<ResidualBlock>(channels, planes, stride, c.block == "bottleneck", c.norm, group,
                                                     c.fused_kernels);
        register_module("block" + std::to_string(blocks.size()), block);
        blocks.push_back(block);
        assign_piece("block" + std::to_string(blocks.size() - 1), pipeline_blocks());
        channels = c.block == "bottleneck" ? planes * 4 : planes;
      }
    }
    plan = checkpoint_plan(static_cast<std::int64_t>(blocks.size()), c.checkpoint_every, c.checkpoint_blocks);
    if (c.dropout > 0) dropout = register_module("dropout", CounterDropout(c.dropout, c.fused_kernels));
    fc = register_module("fc", torch::nn::Linear(channels, in.outputs));
    assign_piece("dropout", pipeline_blocks() + 1);
    assign_piece("fc", pipeline_blocks() + 1);
  }
  torch::Tensor forward(torch::Tensor x) override { return run_pieces(std::move(x)); }
  std::int64_t pipeline_blocks() const override { return static_cast<std::int64_t>(blocks.size()); }
  torch::Tensor run_piece(std::int64_t piece, torch::Tensor x) override {
    check_piece(piece);
    if (piece == 0) return fused ? run_fusing_norm_act(stem, x) : stem->forward(x);
    if (piece <= pipeline_blocks()) {
      const auto i = static_cast<std::size_t>(piece - 1);
      return checkpointed_forward(*blocks[i], x, plan[i]);
    }
    x = x.mean({2, 3});
    if (dropout) x = dropout->forward(x);
    return fc->forward(x);
  }
  bool fused = false;
  torch::nn::Sequential stem;
  std::vector<std::shared_ptr<ResidualBlock>> blocks;
  std::vector<bool> plan;
  CounterDropout dropout{nullptr};
  torch::nn::Linear fc{nullptr};
};

}  // namespace

ModelPtr make_resnet(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
  return std::make_shared<ResNetImpl>(c, in, group);
}

}  // namespace hpctrain
