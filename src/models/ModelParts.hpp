#pragma once
// What several model families share: the fused linear, models whose checkpointing blocks
// are stages over modules they own, normalization and convolution helpers, the sequence
// helpers, and each family's factory. Only models/ includes this header; the registry
// (Registry.cpp) maps config names to the factories.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/Checkpointing.hpp"
#include "models/CounterDropout.hpp"
#include "models/Model.hpp"
#include "models/Normalization.hpp"

namespace hpctrain {

// LibTorch's C++ Linear runs a matmul and then a separate bias add for inputs of more than
// two dimensions; ATen's linear (what torch.nn.Linear calls in Python) folds the leading
// dimensions into one GEMM with the bias in its epilogue. On an H200 the unfused form was
// about 15% of a Transformer step (docs/benchmarks.md).
inline torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x) {
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
  // Layers [begin, end) of `seq`, registered in the model as `name`, as one stage; for a
  // model split into pipeline pieces, the stage is piece stages_.size() (1-based). `run`, when
  // given, computes what the layers in order compute (a fused form of them).
  void add_sequential_stage(torch::nn::Sequential seq, const std::string& name, std::size_t begin, std::size_t end,
                            StageBlock::Run run = {});
  torch::Tensor stage(std::size_t i, const torch::Tensor& x) { return checkpointed_forward(*stages_[i], x, plan_[i]); }
  void train(bool on) override {
    ModelImpl::train(on);
    for (auto& s : stages_) s->train(on);
  }
  std::vector<std::shared_ptr<StageBlock>> stages_;
  std::vector<bool> plan_;
};

// The normalization of MLP and CNN layers: model.norm, or none without model.batch_norm.
std::string mlp_cnn_norm(const ModelConfig& c);
// model.norm after a convolution over images.
torch::nn::AnyModule conv_norm(const std::string& kind, const GroupSum& group, std::int64_t channels);
torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride, bool bias);

// Sequence models. Samples are series windows [V, T] (variables as channels, time last:
// hpctrain import timeseries|synthetic); the head reads the end of the window.
void require_series(const InputSpec& in, const std::string& model);
torch::nn::LSTM make_lstm(std::int64_t inputs, const ModelConfig& c, bool bidirectional);
// The LSTM stack as one checkpointing block: [n, T, inputs] -> the last layer's outputs
// at every step [n, T, directions * hidden]. With `fused` (model.fused_kernels) a stack with
// dropout between its layers runs layer by layer in CPU float32 training, the counter-based
// dropout between them (models/CounterDropout.hpp).
void add_lstm_stage(StagedModel& model, torch::nn::LSTM lstm, bool fused);
// The last layer's final hidden state from its outputs, both directions side by side for a
// BiLSTM: the forward direction's at the last step (it has read the whole window), the
// backward direction's at the first (it has read the window from the end).
torch::Tensor final_state(const torch::Tensor& outputs, bool bidirectional);

// The families, one file each.
ModelPtr make_mlp(const ModelConfig& c, const InputSpec& in, const GroupSum& group);
ModelPtr make_cnn(const ModelConfig& c, const InputSpec& in, const GroupSum& group);
ModelPtr make_resnet(const ModelConfig& c, const InputSpec& in, const GroupSum& group);
ModelPtr make_transformer(const ModelConfig& c, const InputSpec& in);
ModelPtr make_lstm_model(const ModelConfig& c, const InputSpec& in, bool bidirectional);
ModelPtr make_cnn_bilstm(const ModelConfig& c, const InputSpec& in, const GroupSum& group);
ModelPtr make_forecaster(const ModelConfig& c, const InputSpec& in);

}  // namespace hpctrain
