#include "models/Attention.hpp"
#include "models/ModelParts.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Gated residual network (Lim et al., Temporal Fusion Transformers): ELU layer, linear
// layer, a gated linear unit, then the residual (projected when the widths differ) and
// layer norm.
struct GatedResidualImpl : torch::nn::Module {
  GatedResidualImpl(std::int64_t in, std::int64_t hidden, std::int64_t out, const ModelConfig& c) {
    fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, hidden));
    gate = register_module("gate", torch::nn::Linear(hidden, 2 * out));
    if (in != out) skip = register_module("skip", torch::nn::Linear(in, out));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out})));
    drop = register_module("drop", CounterDropout(c.dropout, c.fused_kernels));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto h = drop->forward(linear(fc2, torch::elu(linear(fc1, x))));
    return norm->forward((skip ? linear(skip, x) : x) + torch::glu(linear(gate, h), -1));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, gate{nullptr}, skip{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  CounterDropout drop{nullptr};
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
    variable = register_module("variable", GatedResidual(d, d, d, c));
    selection = register_module("selection", GatedResidual(v * d, d, v, c));
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
    output = register_module("output", GatedResidual(d, d, d, c));
    drop = register_module("drop", CounterDropout(c.dropout, c.fused_kernels));
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
    const auto attended =
        hpctrain::attention(q_k_v[0], q_k_v[1], q_k_v[2], is_training() ? drop->p() : 0.0, /*causal=*/true);
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
  CounterDropout drop{nullptr};
};

}  // namespace

ModelPtr make_forecaster(const ModelConfig& c, const InputSpec& in) {
  return std::make_shared<ForecasterImpl>(c, in);
}

}  // namespace hpctrain
