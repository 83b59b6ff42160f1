#include <cmath>

#include <limits>
#include <tuple>

#include "models/AddNorm.hpp"
#include "models/Attention.hpp"
#include "models/FusedMlp.hpp"
#include "models/ModelParts.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// A pre-norm Transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x)), with
// LibTorch's fused scaled-dot-product attention (models/Attention.hpp; CPU training with dropout:
// attention() below).
// With model.fused_kernels on a GPU the first residual add and the second LayerNorm are one
// kernel (models/AddNorm.hpp), the first LayerNorm writes its output in autocast's type, and,
// with model.gelu=tanh, the MLP's bias, GELU and their gradients run in its GEMMs' cuBLASLt
// epilogues (models/FusedMlp.hpp).
struct EncoderBlock : BlockImpl {
  EncoderBlock(std::int64_t dim, std::int64_t heads, double mlp_ratio, const ModelConfig& c)
      : heads_(heads), p_(c.dropout), fused_(c.fused_kernels), causal_(c.causal), tanh_(c.gelu == "tanh") {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj = register_module("proj", torch::nn::Linear(dim, dim));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    const auto hidden = static_cast<std::int64_t>(static_cast<double>(dim) * mlp_ratio);
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
    drop = register_module("drop", CounterDropout(c.dropout, c.fused_kernels));
  }
  torch::Tensor forward(torch::Tensor x) override {
    const auto n = x.size(0), t = x.size(1), d = x.size(2);
    // [n, t, 3, heads, d/heads] -> 3 x [n, heads, t, d/heads]
    // On a GPU the LayerNorm writes the product's input in autocast's type (models/AddNorm.hpp).
    const auto normed1 = fused_ && x.is_cuda()
                             ? layer_norm_for_matmul(x, norm1->weight, norm1->bias, norm1->options.eps())
                             : norm1->forward(x);
    auto q_k_v = linear(qkv, normed1).view({n, t, 3, heads_, d / heads_}).permute({2, 0, 3, 1, 4});
    const auto attended = attention(q_k_v[0], q_k_v[1], q_k_v[2]);
    const auto branch = drop->forward(linear(proj, attended.transpose(1, 2).reshape({n, t, d})));
    // On a GPU one CUDA kernel (models/AddNorm.hpp, ATen's ops where it does not apply); on CPUs
    // ATen's add and layer_norm (what norm2->forward runs).
    torch::Tensor normed;
    std::tie(x, normed) = (fused_ && x.is_cuda() ? add_layer_norm : add_layer_norm_unfused)(
        x, branch, norm2->weight, norm2->bias, norm2->options.eps(), /*y_for_matmul=*/true);
    if (tanh_ && fused_ && x.is_cuda()) {
      return x + drop->forward(mlp_gelu_tanh(normed, fc1->weight, fc1->bias, fc2->weight, fc2->bias));
    }
    return x + drop->forward(linear(fc2, torch::gelu(linear(fc1, normed), tanh_ ? "tanh" : "none")));
  }
  // softmax(q k^T / sqrt(d_head)) v over [n, heads, t, d_head], dropout on the probabilities in
  // training. On CPUs LibTorch runs attention with dropout as its math path (the fused kernel
  // takes none) and draws the mask one Bernoulli variate at a time; with model.fused_kernels the
  // same math path runs here with the counter-based dropout (models/CounterDropout.hpp). As in
  // LibTorch's math path, bfloat16 inputs (CPU autocast) are computed on in float32, autocast
  // off, and the result rounded back.
  torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
    const bool dropout = is_training() && p_ > 0;
    const auto dtype = q.scalar_type();
    if (!dropout || !fused_ || !q.device().is_cpu() || (dtype != torch::kFloat && dtype != torch::kBFloat16)) {
      return hpctrain::attention(q, k, v, dropout ? p_ : 0.0, causal_);
    }
    note_attention_backend("math");
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKeySet(c10::DispatchKey::AutocastCPU));
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    const auto qf = q.to(torch::kFloat), kf = k.to(torch::kFloat), vf = v.to(torch::kFloat);
    auto scores = torch::matmul(qf * scale, kf.transpose(-2, -1));
    if (causal_) {
      const auto t = scores.size(-1);
      scores = scores.masked_fill(torch::ones({t, t}, scores.options().dtype(torch::kBool)).triu(1),
                                  -std::numeric_limits<float>::infinity());
    }
    const auto probs = torch::softmax(scores, -1);
    return torch::matmul(drop->forward(probs), vf).to(dtype);
  }
  std::int64_t heads_;
  double p_;
  bool fused_, causal_, tanh_;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  CounterDropout drop{nullptr};
};

// Transformer encoder over tokens: image patches ([C, H, W]: a strided convolution embeds
// each patch), the steps of a series ([V, T]: a linear embedding of each step's V values) or the
// features of a table ([F]: each feature value scales its own learned embedding). Learned
// positional embeddings, pre-norm blocks, a final layer norm, mean pooling (model.causal: causal
// attention, as a GPT-style decoder, and the last token's state), the head.
// Pipeline pieces: the stem (token embedding and positions), each block, the head (final
// norm, pooling, head).
struct TransformerImpl : ModelImpl {
  TransformerImpl(const ModelConfig& c, const InputSpec& in) : shape_(in.sample_shape), causal_(c.causal) {
    const std::int64_t d = c.embed_dim;
    if (d % c.heads != 0) {
      throw ConfigError("model.embed_dim: " + std::to_string(d) + " is not a multiple of model.heads (" +
                        std::to_string(c.heads) + ")");
    }
    std::int64_t tokens = 0;
    if (shape_.size() == 3) {
      if (shape_[1] % c.patch_size != 0 || shape_[2] % c.patch_size != 0) {
        throw ConfigError("model.patch_size: " + std::to_string(c.patch_size) + " does not divide the " +
                          std::to_string(shape_[1]) + "x" + std::to_string(shape_[2]) + " images");
      }
      patch = register_module(
          "patch", torch::nn::Conv2d(torch::nn::Conv2dOptions(shape_[0], d, c.patch_size).stride(c.patch_size)));
      tokens = (shape_[1] / c.patch_size) * (shape_[2] / c.patch_size);
    } else if (shape_.size() == 2) {
      step = register_module("step", torch::nn::Linear(shape_[0], d));
      tokens = shape_[1];
    } else {
      feature_embedding = register_parameter("feature_embedding", torch::randn({shape_[0], d}) * 0.02);
      feature_bias = register_parameter("feature_bias", torch::zeros({shape_[0], d}));
      tokens = shape_[0];
    }
    position = register_parameter("position", torch::randn({1, tokens, d}) * 0.02);
    for (const char* path : {"patch", "step", "feature_embedding", "feature_bias", "position"}) assign_piece(path, 0);
    for (std::int64_t i = 0; i < c.layers; ++i) {
      auto block = std::make_shared<EncoderBlock>(d, c.heads, c.mlp_ratio, c);
      register_module("block" + std::to_string(i), block);
      blocks.push_back(block);
      assign_piece("block" + std::to_string(i), i + 1);
    }
    plan = checkpoint_plan(c.layers, c.checkpoint_every, c.checkpoint_blocks);
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    head = register_module("head", torch::nn::Linear(d, in.outputs));
    assign_piece("norm", c.layers + 1);
    assign_piece("head", c.layers + 1);
  }
  torch::Tensor forward(torch::Tensor x) override { return run_pieces(std::move(x)); }
  std::int64_t pipeline_blocks() const override { return static_cast<std::int64_t>(blocks.size()); }
  torch::Tensor run_piece(std::int64_t piece, torch::Tensor x) override {
    check_piece(piece);
    if (piece == 0) return embed(x);
    if (piece <= pipeline_blocks()) {
      const auto i = static_cast<std::size_t>(piece - 1);
      return checkpointed_forward(*blocks[i], x, plan[i]);
    }
    // Causal: only the last token has seen the whole sequence.
    return head->forward(causal_ ? norm->forward(x.select(1, -1)) : norm->forward(x).mean(1));
  }
  // Samples -> tokens with positions [n, tokens, d].
  torch::Tensor embed(torch::Tensor x) {
    if (patch) {
      x = patch->forward(x).flatten(2).transpose(1, 2);  // [n, tokens, d]
    } else if (step) {
      x = linear(step, x.transpose(1, 2));  // [n, T, V] -> [n, T, d]
    } else {
      x = x.unsqueeze(-1) * feature_embedding + feature_bias;
    }
    return x + position;
  }
  std::vector<std::int64_t> shape_;
  bool causal_;
  torch::nn::Conv2d patch{nullptr};
  torch::nn::Linear step{nullptr};
  torch::Tensor feature_embedding, feature_bias, position;
  std::vector<std::shared_ptr<EncoderBlock>> blocks;
  std::vector<bool> plan;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};

}  // namespace

ModelPtr make_transformer(const ModelConfig& c, const InputSpec& in) {
  return std::make_shared<TransformerImpl>(c, in);
}

}  // namespace hpctrain
