#include "models/ModelParts.hpp"

#include "util/Error.hpp"

namespace hpctrain {

void StagedModel::add_sequential_stage(torch::nn::Sequential seq, const std::string& name, std::size_t begin,
                                       std::size_t end, StageBlock::Run run) {
  std::vector<std::shared_ptr<torch::nn::Module>> modules;
  for (std::size_t j = begin; j < end; ++j) modules.push_back(seq->ptr(j));
  if (!run) {
    run = [seq, begin, end](const torch::Tensor& x) mutable {
      torch::Tensor y = x;
      for (auto it = seq->begin() + begin; it != seq->begin() + end; ++it) y = it->forward(y);
      return y;
    };
  }
  add_stage(std::move(run), modules);
  for (std::size_t j = begin; j < end; ++j)
    assign_piece(name + "." + std::to_string(j), static_cast<std::int64_t>(stages_.size()));
}

std::string mlp_cnn_norm(const ModelConfig& c) {
  return c.batch_norm ? c.norm : "none";
}

torch::nn::AnyModule conv_norm(const std::string& kind, const GroupSum& group, std::int64_t channels) {
  return norm_layer(kind, channels, 2, group);
}

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride, bool bias) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(bias));
}

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

void add_lstm_stage(StagedModel& model, torch::nn::LSTM lstm) {
  model.add_stage([lstm](const torch::Tensor& x) mutable { return std::get<0>(lstm->forward(x)); }, {lstm.ptr()},
                  /*has_lstm=*/true);
}

torch::Tensor final_state(const torch::Tensor& outputs, bool bidirectional) {
  const auto t = outputs.size(1);
  if (!bidirectional) return outputs.select(1, t - 1);
  const auto h = outputs.size(2) / 2;
  return torch::cat({outputs.select(1, t - 1).slice(1, 0, h), outputs.select(1, 0).slice(1, h, 2 * h)}, 1);
}

}  // namespace hpctrain
