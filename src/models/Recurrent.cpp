#include "models/ModelParts.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// LSTM and BiLSTM: stacked LSTM layers over the window's steps (one checkpointing block),
// dropout, linear head.
struct LstmImpl : StagedModel {
  LstmImpl(const ModelConfig& c, const InputSpec& in, bool bidirectional) : bidirectional_(bidirectional) {
    require_series(in, bidirectional ? "bilstm" : "lstm");
    lstm = register_module("lstm", make_lstm(in.sample_shape[0], c, bidirectional));
    drop = register_module("drop", CounterDropout(c.dropout, c.fused_kernels));
    head = register_module("head", torch::nn::Linear(c.hidden_size * (bidirectional ? 2 : 1), in.outputs));
    add_lstm_stage(*this, lstm, c.fused_kernels);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override {
    return linear(head, drop->forward(final_state(stage(0, x.transpose(1, 2)), bidirectional_)));
  }
  bool bidirectional_;
  torch::nn::LSTM lstm{nullptr};
  CounterDropout drop{nullptr};
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
      add_sequential_stage(features, "features", begin, features->size());
      channels = out;
    }
    lstm = register_module("lstm", make_lstm(channels, c, true));
    drop = register_module("drop", CounterDropout(c.dropout, c.fused_kernels));
    head = register_module("head", torch::nn::Linear(2 * c.hidden_size, in.outputs));
    add_lstm_stage(*this, lstm, c.fused_kernels);
    plan_stages(c);
  }
  torch::Tensor forward(torch::Tensor x) override {
    for (std::size_t i = 0; i + 1 < stages_.size(); ++i) x = stage(i, x);  // [n, channels, T]
    return linear(head, drop->forward(final_state(stage(stages_.size() - 1, x.transpose(1, 2)), true)));
  }
  torch::nn::Sequential features{nullptr};
  torch::nn::LSTM lstm{nullptr};
  CounterDropout drop{nullptr};
  torch::nn::Linear head{nullptr};
};

}  // namespace

ModelPtr make_lstm_model(const ModelConfig& c, const InputSpec& in, bool bidirectional) {
  return std::make_shared<LstmImpl>(c, in, bidirectional);
}

ModelPtr make_cnn_bilstm(const ModelConfig& c, const InputSpec& in, const GroupSum& group) {
  return std::make_shared<CnnBiLstmImpl>(c, in, group);
}

}  // namespace hpctrain
