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

namespace {

// lstm's layers one at a time with the counter-based dropout between them (what the module's
// forward computes with its dropout, other draws): LibTorch's multi-layer LSTM draws its
// inter-layer masks one Bernoulli variate at a time (models/CounterDropout.hpp).
torch::Tensor lstm_layer_by_layer(torch::nn::LSTMImpl& lstm, CounterDropoutImpl& drop, torch::Tensor x) {
  const auto& o = lstm.options;
  const std::int64_t directions = o.bidirectional() ? 2 : 1;
  const auto per_layer = static_cast<std::size_t>(directions * (o.bias() ? 4 : 2));
  const auto weights = lstm.all_weights();
  const auto zeros = torch::zeros({directions, x.size(0), o.hidden_size()}, x.options());  // batch first
  for (std::int64_t layer = 0; layer < o.num_layers(); ++layer) {
    if (layer > 0) x = drop.forward(x);
    const std::vector<torch::Tensor> params(weights.begin() + static_cast<std::ptrdiff_t>(layer * per_layer),
                                            weights.begin() + static_cast<std::ptrdiff_t>((layer + 1) * per_layer));
    x = std::get<0>(torch::lstm(x, {zeros, zeros}, params, o.bias(), 1, 0.0, true, o.bidirectional(), o.batch_first()));
  }
  return x;
}

}  // namespace

void add_lstm_stage(StagedModel& model, torch::nn::LSTM lstm, bool fused) {
  CounterDropout drop(lstm->options.dropout(), true);
  const auto& o = lstm->options;
  const bool layers = fused && o.num_layers() > 1 && o.dropout() > 0 && !o.proj_size() && o.batch_first();
  model.add_stage(
      [lstm, drop, layers](const torch::Tensor& x) mutable {
        if (layers && lstm->is_training() && x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
          return lstm_layer_by_layer(*lstm, *drop, x);
        }
        return std::get<0>(lstm->forward(x));
      },
      {lstm.ptr()}, /*has_lstm=*/true);
}

torch::Tensor final_state(const torch::Tensor& outputs, bool bidirectional) {
  const auto t = outputs.size(1);
  if (!bidirectional) return outputs.select(1, t - 1);
  const auto h = outputs.size(2) / 2;
  return torch::cat({outputs.select(1, t - 1).slice(1, 0, h), outputs.select(1, 0).slice(1, h, 2 * h)}, 1);
}

}  // namespace hpctrain
