#include <map>

#include "models/Checkpointing.hpp"
#include "models/Model.hpp"
#include "models/Normalization.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// LibTorch's C++ Linear runs a matmul and then a separate bias add for inputs of more than
// two dimensions; ATen's linear (what torch.nn.Linear calls in Python) folds the leading
// dimensions into one GEMM with the bias in its epilogue. On an H200 the unfused form was
// about 15% of a Transformer step (docs/benchmarks.md).
torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x) {
  return torch::linear(x, layer->weight, layer->bias);
}

// A model whose checkpointable blocks are stages over modules it owns (StageBlock): MLP
// layers, CNN stages, the LSTM, the forecaster's stages.
struct StagedModel : ModelImpl {
  // `has_lstm`: the stage runs an LSTM (BlockImpl::first_forward_records).
  void add_stage(StageBlock::Run run, const std::vector<std::shared_ptr<torch::nn::Module>>& modules,
                 bool has_lstm = false) {
    stages_.push_back(std::make_shared<StageBlock>(std::move(run), modules, has_lstm));
  }
  void plan_stages(const ModelConfig& c) {
    plan_ = checkpoint_plan(static_cast<std::int64_t>(stages_.size()), c.checkpoint_every, c.checkpoint_blocks);
  }
  torch::Tensor stage(std::size_t i, const torch::Tensor& x) { return checkpointed_forward(*stages_[i], x, plan_[i]); }
  void train(bool on) override {
    ModelImpl::train(on);
    for (auto& s : stages_) s->train(on);
  }
  std::vector<std::shared_ptr<StageBlock>> stages_;
  std::vector<bool> plan_;
};

// Layers [begin, end) of a Sequential as one stage.
void add_sequential_stage(StagedModel& model, torch::nn::Sequential seq, std::size_t begin, std::size_t end) {
  std::vector<std::shared_ptr<torch::nn::Module>> modules;
  for (std::size_t j = begin; j < end; ++j) modules.push_back(seq->ptr(j));
  model.add_stage(
      [seq, begin, end](const torch::Tensor& x) mutable {
        torch::Tensor y = x;
        for (auto it = seq->begin() + begin; it != seq->begin() + end; ++it) y = it->forward(y);
        return y;
      },
      modules);
}

// The normalization of MLP and CNN layers: model.norm, or none without model.batch_norm.
std::string mlp_cnn_norm(const ModelConfig& c) {
  return c.batch_norm ? c.norm : "none";
}

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

// Convolution stages (3x3 conv, optional normalization, ReLU, 2x2 max pool; each a block for
// checkpointing), then a fully connected layer, dropout and the classifier.
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
      features->push_back(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, c.channels[i], 3).padding(1).bias(norm == "none")));
      if (norm != "none") features->push_back(norm_layer(norm, c.channels[i], 2, group));
      features->push_back(torch::nn::ReLU());
      features->push_back(torch::nn::MaxPool2d(2));
      add_sequential_stage(*this, features, begin, features->size());
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
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override {
    for (std::size_t i = 0; i < stages_.size(); ++i) x = stage(i, x);
    return head->forward(x.flatten(1));
  }
  torch::nn::Sequential features;
  torch::nn::Sequential head;
};

// model.norm after a convolution over images.
torch::nn::AnyModule conv_norm(const std::string& kind, const GroupSum& group, std::int64_t channels) {
  return norm_layer(kind, channels, 2, group);
}

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride, bool bias) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(bias));
}

// A residual block: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion), with a
// 1x1 projection on the shortcut when the shape changes.
struct ResidualBlock : BlockImpl {
  ResidualBlock(std::int64_t in, std::int64_t planes, std::int64_t stride, bool bottleneck, const std::string& norm,
                const GroupSum& group) {
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
    return torch::relu(body->forward(x) + skip);
  }
  torch::nn::Sequential body;
  torch::nn::Sequential shortcut;
};

// ResNet (He et al.): a CIFAR (3x3) or ImageNet (7x7 stride 2 + max pool) stem, stages of
// residual blocks (every stage after the first halves the resolution and doubles the
// channels), global average pooling and the classifier.
struct ResNetImpl : ModelImpl {
  ResNetImpl(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
    if (in.sample_shape.size() != 3) {
      throw ConfigError("model.name: resnet needs image samples [C, H, W]; this data set has " +
                        std::to_string(in.sample_shape.size()) + "-dimensional samples");
    }
    const bool bias = c.norm == "none";
    if (c.stem == "imagenet") {
      stem->push_back(conv(in.sample_shape[0], c.width, 7, 2, bias));
      stem->push_back(conv_norm(c.norm, group, c.width));
      stem->push_back(torch::nn::ReLU());
      stem->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
    } else {
      stem->push_back(conv(in.sample_shape[0], c.width, 3, 1, bias));
      stem->push_back(conv_norm(c.norm, group, c.width));
      stem->push_back(torch::nn::ReLU());
    }
    register_module("stem", stem);
    std::int64_t channels = c.width;
    for (std::size_t stage = 0; stage < c.blocks.size(); ++stage) {
      const std::int64_t planes = c.width << stage;
      for (std::int64_t b = 0; b < c.blocks[stage]; ++b) {
        const std::int64_t stride = stage > 0 && b == 0 ? 2 : 1;
        auto block = std::make_shared<ResidualBlock>(channels, planes, stride, c.block == "bottleneck", c.norm, group);
        register_module("block" + std::to_string(blocks.size()), block);
        blocks.push_back(block);
        channels = c.block == "bottleneck" ? planes * 4 : planes;
      }
    }
    plan = checkpoint_plan(static_cast<std::int64_t>(blocks.size()), c.checkpoint_every, c.checkpoint_blocks);
    if (c.dropout > 0) dropout = register_module("dropout", torch::nn::Dropout(c.dropout));
    fc = register_module("fc", torch::nn::Linear(channels, in.outputs));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = stem->forward(x);
    for (std::size_t i = 0; i < blocks.size(); ++i) x = checkpointed_forward(*blocks[i], x, plan[i]);
    x = x.mean({2, 3});
    if (dropout) x = dropout->forward(x);
    return fc->forward(x);
  }
  torch::nn::Sequential stem;
  std::vector<std::shared_ptr<ResidualBlock>> blocks;
  std::vector<bool> plan;
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc{nullptr};
};

// A pre-norm Transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x)), with
// LibTorch's fused scaled-dot-product attention.
struct EncoderBlock : BlockImpl {
  EncoderBlock(std::int64_t dim, std::int64_t heads, double mlp_ratio, double dropout) : heads_(heads), p_(dropout) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj = register_module("proj", torch::nn::Linear(dim, dim));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    const auto hidden = static_cast<std::int64_t>(static_cast<double>(dim) * mlp_ratio);
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
    drop = register_module("drop", torch::nn::Dropout(dropout));
  }
  torch::Tensor forward(torch::Tensor x) override {
    const auto n = x.size(0), t = x.size(1), d = x.size(2);
    // [n, t, 3, heads, d/heads] -> 3 x [n, heads, t, d/heads]
    auto q_k_v = linear(qkv, norm1->forward(x)).view({n, t, 3, heads_, d / heads_}).permute({2, 0, 3, 1, 4});
    auto attended = torch::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2], {}, is_training() ? p_ : 0.0);
    x = x + drop->forward(linear(proj, attended.transpose(1, 2).reshape({n, t, d})));
    return x + drop->forward(linear(fc2, torch::gelu(linear(fc1, norm2->forward(x)))));
  }
  std::int64_t heads_;
  double p_;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};

// Transformer encoder over tokens: image patches ([C, H, W]: a strided convolution embeds
// each patch), the steps of a series ([V, T]: a linear embedding of each step's V values) or the
// features of a table ([F]: each feature value scales its own learned embedding). Learned
// positional embeddings, pre-norm blocks, a final layer norm, mean pooling, the head.
struct TransformerImpl : ModelImpl {
  TransformerImpl(const ModelConfig& c, const InputSpec& in) : shape_(in.sample_shape) {
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
    for (std::int64_t i = 0; i < c.layers; ++i) {
      auto block = std::make_shared<EncoderBlock>(d, c.heads, c.mlp_ratio, c.dropout);
      register_module("block" + std::to_string(i), block);
      blocks.push_back(block);
    }
    plan = checkpoint_plan(c.layers, c.checkpoint_every, c.checkpoint_blocks);
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    head = register_module("head", torch::nn::Linear(d, in.outputs));
  }
  torch::Tensor forward(torch::Tensor x) override {
    if (patch) {
      x = patch->forward(x).flatten(2).transpose(1, 2);  // [n, tokens, d]
    } else if (step) {
      x = linear(step, x.transpose(1, 2));  // [n, T, V] -> [n, T, d]
    } else {
      x = x.unsqueeze(-1) * feature_embedding + feature_bias;
    }
    x = x + position;
    for (std::size_t i = 0; i < blocks.size(); ++i) x = checkpointed_forward(*blocks[i], x, plan[i]);
    return head->forward(norm->forward(x).mean(1));
  }
  std::vector<std::int64_t> shape_;
  torch::nn::Conv2d patch{nullptr};
  torch::nn::Linear step{nullptr};
  torch::Tensor feature_embedding, feature_bias, position;
  std::vector<std::shared_ptr<EncoderBlock>> blocks;
  std::vector<bool> plan;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};

// ---- Sequence models. Samples are series windows [V, T] (variables as channels, time
// last: hpctrain import timeseries|synthetic); the head reads the end of the window. ----

void require_series(const InputSpec& in, const std::string& model) {
  if (in.sample_shape.size() != 2) {
    throw ConfigError("model.name: " + model + " needs series windows [variables, steps], the data have " +
                      std::to_string(in.sample_shape.size()) + "-dimensional samples");
  }
}

torch::nn::LSTM make_lstm(std::int64_t inputs, const ModelConfig& c, bool bidirectional) {
  return torch::nn::LSTM(torch::nn::LSTMOptions(inputs, c.hidden_size)
                             .num_layers(c.rnn_layers)
                             .batch_first(true)
                             .bidirectional(bidirectional)
                             .dropout(c.rnn_layers > 1 ? c.dropout : 0.0));
}

// The LSTM stack as one checkpointing block: [n, T, inputs] -> the last layer's outputs
// at every step [n, T, directions * hidden].
void add_lstm_stage(StagedModel& model, torch::nn::LSTM lstm) {
  model.add_stage([lstm](const torch::Tensor& x) mutable { return std::get<0>(lstm->forward(x)); }, {lstm.ptr()},
                  /*has_lstm=*/true);
}

// The last layer's final hidden state from its outputs, both directions side by side for a
// BiLSTM: the forward direction's at the last step (it has read the whole window), the
// backward direction's at the first (it has read the window from the end).
torch::Tensor final_state(const torch::Tensor& outputs, bool bidirectional) {
  const auto t = outputs.size(1);
  if (!bidirectional) return outputs.select(1, t - 1);
  const auto h = outputs.size(2) / 2;
  return torch::cat({outputs.select(1, t - 1).slice(1, 0, h), outputs.select(1, 0).slice(1, h, 2 * h)}, 1);
}

// LSTM and BiLSTM: stacked LSTM layers over the window's steps (one checkpointing block),
// dropout, linear head.
struct LstmImpl : StagedModel {
  LstmImpl(const ModelConfig& c, const InputSpec& in, bool bidirectional) : bidirectional_(bidirectional) {
    require_series(in, bidirectional ? "bilstm" : "lstm");
    lstm = register_module("lstm", make_lstm(in.sample_shape[0], c, bidirectional));
    drop = register_module("drop", torch::nn::Dropout(c.dropout));
    head = register_module("head", torch::nn::Linear(c.hidden_size * (bidirectional ? 2 : 1), in.outputs));
    add_lstm_stage(*this, lstm);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override {
    return linear(head, drop->forward(final_state(stage(0, x.transpose(1, 2)), bidirectional_)));
  }
  bool bidirectional_;
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::Linear head{nullptr};
};

// CNN-BiLSTM: 1-D convolutions over time (model.channels, model.kernel_size, model.norm,
// ReLU) extract local patterns at every step; a BiLSTM reads their sequence. Blocks for
// checkpointing: each convolution, then the BiLSTM.
struct CnnBiLstmImpl : StagedModel {
  CnnBiLstmImpl(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
    require_series(in, "cnn_bilstm");
    features = register_module("features", torch::nn::Sequential());
    std::int64_t channels = in.sample_shape[0];
    for (const auto out : c.channels) {
      const auto begin = features->size();
      features->push_back(torch::nn::Conv1d(
          torch::nn::Conv1dOptions(channels, out, c.kernel_size).padding(c.kernel_size / 2).bias(c.norm == "none")));
      if (c.norm != "none") features->push_back(norm_layer(c.norm, out, 1, group));
      features->push_back(torch::nn::ReLU());
      add_sequential_stage(*this, features, begin, features->size());
      channels = out;
    }
    lstm = register_module("lstm", make_lstm(channels, c, true));
    drop = register_module("drop", torch::nn::Dropout(c.dropout));
    head = register_module("head", torch::nn::Linear(2 * c.hidden_size, in.outputs));
    add_lstm_stage(*this, lstm);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override {
    for (std::size_t i = 0; i + 1 < stages_.size(); ++i) x = stage(i, x);  // [n, channels, T]
    return linear(head, drop->forward(final_state(stage(stages_.size() - 1, x.transpose(1, 2)), true)));
  }
  torch::nn::Sequential features{nullptr};
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::Linear head{nullptr};
};

// Gated residual network (Lim et al., Temporal Fusion Transformers): ELU layer, linear
// layer, a gated linear unit, then the residual (projected when the widths differ) and
// layer norm.
struct GatedResidualImpl : torch::nn::Module {
  GatedResidualImpl(std::int64_t in, std::int64_t hidden, std::int64_t out, double dropout) {
    fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, hidden));
    gate = register_module("gate", torch::nn::Linear(hidden, 2 * out));
    if (in != out) skip = register_module("skip", torch::nn::Linear(in, out));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out})));
    drop = register_module("drop", torch::nn::Dropout(dropout));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto h = drop->forward(linear(fc2, torch::elu(linear(fc1, x))));
    return norm->forward((skip ? linear(skip, x) : x) + torch::glu(linear(gate, h), -1));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, gate{nullptr}, skip{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(GatedResidual);

// Temporal-fusion-style forecaster: each variable's value at each step gets its own learned
// embedding; a gated residual network per variable (weights shared between variables)
// processes it and a variable selection network weighs the variables per step (softmax);
// an LSTM encoder reads the selected sequence, gated and added back; causal multi-head
// self-attention (scaled dot-product attention) over the steps, gated and added back; a
// last gated residual network and the head at the final step. Blocks for checkpointing: the
// variable selection, the LSTM encoder, the attention, the output network.
struct ForecasterImpl : StagedModel {
  ForecasterImpl(const ModelConfig& c, const InputSpec& in) : heads_(c.heads) {
    require_series(in, "forecaster");
    const std::int64_t d = c.hidden_size, v = in.sample_shape[0];
    if (d % c.heads != 0) {
      throw ConfigError("model.hidden_size: " + std::to_string(d) + " is not a multiple of model.heads (" +
                        std::to_string(c.heads) + ")");
    }
    embedding = register_parameter("embedding", torch::randn({v, d}) * 0.1);
    embedding_bias = register_parameter("embedding_bias", torch::zeros({v, d}));
    variable = register_module("variable", GatedResidual(d, d, d, c.dropout));
    selection = register_module("selection", GatedResidual(v * d, d, v, c.dropout));
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(d, d)
                                                       .num_layers(c.rnn_layers)
                                                       .batch_first(true)
                                                       .dropout(c.rnn_layers > 1 ? c.dropout : 0.0)));
    lstm_gate = register_module("lstm_gate", torch::nn::Linear(d, 2 * d));
    lstm_norm = register_module("lstm_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    qkv = register_module("qkv", torch::nn::Linear(d, 3 * d));
    proj = register_module("proj", torch::nn::Linear(d, d));
    attention_gate = register_module("attention_gate", torch::nn::Linear(d, 2 * d));
    attention_norm = register_module("attention_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    output = register_module("output", GatedResidual(d, d, d, c.dropout));
    drop = register_module("drop", torch::nn::Dropout(c.dropout));
    head = register_module("head", torch::nn::Linear(d, in.outputs));
    add_stage([this](const torch::Tensor& x) { return select_variables(x); }, {variable.ptr(), selection.ptr()});
    add_stage([this](const torch::Tensor& z) { return encode(z); },
              {lstm.ptr(), lstm_gate.ptr(), lstm_norm.ptr(), drop.ptr()}, /*has_lstm=*/true);
    add_stage([this](const torch::Tensor& z) { return attend(z); },
              {qkv.ptr(), proj.ptr(), attention_gate.ptr(), attention_norm.ptr(), drop.ptr()});
    add_stage([this](const torch::Tensor& z) { return output->forward(z.select(1, z.size(1) - 1)); }, {output.ptr()});
    plan_stages(c);
  }
  // [n, V, T] -> [n, T, d]: embeddings weighed by the variable selection.
  torch::Tensor select_variables(const torch::Tensor& x) {
    const auto e = x.transpose(1, 2).unsqueeze(-1) * embedding + embedding_bias;              // [n, T, V, d]
    const auto weights = torch::softmax(selection->forward(e.flatten(2)), -1).unsqueeze(-1);  // [n, T, V, 1]
    return (weights * variable->forward(e)).sum(2);
  }
  torch::Tensor encode(const torch::Tensor& z) {
    const auto encoded = std::get<0>(lstm->forward(z));
    return lstm_norm->forward(z + torch::glu(linear(lstm_gate, drop->forward(encoded)), -1));
  }
  torch::Tensor attend(const torch::Tensor& z) {
    const auto n = z.size(0), t = z.size(1), d = z.size(2);
    const auto q_k_v = linear(qkv, z).view({n, t, 3, heads_, d / heads_}).permute({2, 0, 3, 1, 4});
    const auto attended = torch::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2], {},
                                                              is_training() ? drop->options.p() : 0.0, true);
    const auto a = linear(proj, attended.transpose(1, 2).reshape({n, t, d}));
    return attention_norm->forward(z + torch::glu(linear(attention_gate, drop->forward(a)), -1));
  }
  torch::Tensor forward(torch::Tensor x) override {
    for (std::size_t i = 0; i < stages_.size(); ++i) x = stage(i, x);
    return linear(head, x);
  }
  std::int64_t heads_;
  torch::Tensor embedding, embedding_bias;
  GatedResidual variable{nullptr}, selection{nullptr}, output{nullptr};
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear lstm_gate{nullptr}, qkv{nullptr}, proj{nullptr}, attention_gate{nullptr}, head{nullptr};
  torch::nn::LayerNorm lstm_norm{nullptr}, attention_norm{nullptr};
  torch::nn::Dropout drop{nullptr};
};

const std::map<std::string, ModelFactory>& registry() {
  using C = const ModelConfig&;
  using I = const InputSpec&;
  using G = const GroupSum&;
  static const std::map<std::string, ModelFactory> r = {
      {"mlp", [](C c, I in, G g) { return std::make_shared<MlpImpl>(c, in, g); }},
      {"cnn", [](C c, I in, G g) { return std::make_shared<CnnImpl>(c, in, g); }},
      {"resnet", [](C c, I in, G g) { return std::make_shared<ResNetImpl>(c, in, g); }},
      {"transformer", [](C c, I in, G) { return std::make_shared<TransformerImpl>(c, in); }},
      {"lstm", [](C c, I in, G) { return std::make_shared<LstmImpl>(c, in, false); }},
      {"bilstm", [](C c, I in, G) { return std::make_shared<LstmImpl>(c, in, true); }},
      {"cnn_bilstm", [](C c, I in, G g) { return std::make_shared<CnnBiLstmImpl>(c, in, g); }},
      {"forecaster", [](C c, I in, G) { return std::make_shared<ForecasterImpl>(c, in); }},
  };
  return r;
}

}  // namespace

ModelPtr build_model(const ModelConfig& config, const InputSpec& input, const GroupSum& group) {
  const auto& r = registry();
  auto it = r.find(config.name);
  if (it == r.end()) throw ConfigError("model.name: unknown model \"" + config.name + "\"");
  return it->second(config, input, group);
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
