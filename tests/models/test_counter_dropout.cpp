// models/CounterDropout: dropout whose mask is a hash of (seed, element): each element kept
// with probability 1 - p and scaled by 1 / (1 - p), neighbours independent, the backward
// through the forward's mask, the same mask for the same seed on any number of threads, the
// seed drawn from LibTorch's generator (train.seed fixes a run), identity in evaluation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "models/Checkpointing.hpp"
#include "models/CounterDropout.hpp"
#include "models/DropoutKernels.hpp"
#include "models/Model.hpp"

namespace hpctrain {
namespace {

std::uint32_t threshold(double p) {
  return static_cast<std::uint32_t>(std::ldexp(p, 32));
}

TEST(CounterDropout, KeepsOneMinusPIndependently) {
  const std::int64_t n = 1 << 20;
  const double p = 0.3;
  const auto x = torch::ones({n});
  const auto y = counter_dropout(x, p, 12345);
  const double kept = y.ne(0).sum().item<double>() / static_cast<double>(n);
  const double sd = std::sqrt(p * (1 - p) / static_cast<double>(n));
  EXPECT_NEAR(kept, 1 - p, 5 * sd);
  // Neighbours (i, i + 1) and (i, i + 16) both kept as often as independent draws are.
  const auto k = y.ne(0).to(torch::kDouble);
  for (const std::int64_t lag : {1, 16, 1024}) {
    const double both = (k.slice(0, 0, n - lag) * k.slice(0, lag)).mean().item<double>();
    EXPECT_NEAR(both, (1 - p) * (1 - p), 5 * std::sqrt((1 - p) * (1 - p) / static_cast<double>(n))) << "lag " << lag;
  }
}

TEST(CounterDropout, ForwardAndBackwardFollowTheSeedsMask) {
  torch::manual_seed(1);
  const double p = 0.25;
  const std::uint64_t seed = 0x9e3779b97f4a7c15ULL;
  auto x = torch::randn({7, 33}).requires_grad_();
  const auto y = counter_dropout(x, p, seed);
  const auto g = torch::randn({7, 33});
  y.backward(g);
  const auto scale = static_cast<float>(1.0 / (1.0 - p));
  const auto xf = x.detach().flatten(), yf = y.detach().flatten(), gf = g.flatten(), dx = x.grad().flatten();
  for (std::int64_t i = 0; i < xf.numel(); ++i) {
    const bool keep = kernels::dropout_keeps(seed, i, threshold(p));
    ASSERT_EQ(yf[i].item<float>(), keep ? xf[i].item<float>() * scale : 0.f) << i;
    ASSERT_EQ(dx[i].item<float>(), keep ? gf[i].item<float>() * scale : 0.f) << i;
  }
}

TEST(CounterDropout, Bfloat16KeepsTheFloatMaskRounded) {
  // What CPU autocast (precision.mode=bf16) gives the dropout: the same mask as float32, the
  // kept values scaled in float and rounded to nearest; the gradient likewise.
  torch::manual_seed(2);
  const double p = 0.3;
  const auto x = torch::randn({9, 41}).to(torch::kBFloat16).requires_grad_();
  const auto y = counter_dropout(x, p, 77);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(y, counter_dropout(x.detach().to(torch::kFloat), p, 77).to(torch::kBFloat16)));
  const auto g = torch::randn({9, 41}).to(torch::kBFloat16);
  y.backward(g);
  ASSERT_EQ(x.grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(x.grad(), counter_dropout(g.to(torch::kFloat), p, 77).to(torch::kBFloat16)));
  CounterDropout drop(p, /*fused=*/true);
  torch::manual_seed(5);
  const auto module = drop->forward(x.detach());
  torch::manual_seed(5);
  EXPECT_FALSE(torch::equal(module, torch::dropout(x.detach(), p, true))) << "bfloat16 took LibTorch's dropout";
}

TEST(CounterDropout, SameMaskOnAnyNumberOfThreadsOtherMaskForAnotherSeed) {
  const auto x = torch::randn({300000});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = counter_dropout(x, 0.5, 7);
  at::set_num_threads(2);
  const auto two = counter_dropout(x, 0.5, 7);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one, two));
  EXPECT_FALSE(torch::equal(one, counter_dropout(x, 0.5, 8)));
}

TEST(CounterDropout, ModuleDrawsItsSeedFromLibTorchsGenerator) {
  CounterDropout drop(0.4, /*fused=*/true);
  const auto x = torch::randn({64, 50});
  torch::manual_seed(3);
  const auto a = drop->forward(x);
  const auto b = drop->forward(x);  // the generator moved on: another mask
  torch::manual_seed(3);
  EXPECT_TRUE(torch::equal(drop->forward(x), a));
  EXPECT_FALSE(torch::equal(a, b));
  // A transposed view is masked in its contiguous copy's order.
  torch::manual_seed(4);
  const auto view = drop->forward(x.t());
  torch::manual_seed(4);
  EXPECT_TRUE(torch::equal(view, drop->forward(x.t().contiguous())));
  drop->eval();
  EXPECT_TRUE(torch::equal(drop->forward(x), x));
  // Switched off (model.fused_kernels=false), GPUs and other dtypes: LibTorch's dropout.
  CounterDropout plain(0.4, /*fused=*/false);
  torch::manual_seed(3);
  const auto want = torch::dropout(x, 0.4, true);
  torch::manual_seed(3);
  EXPECT_TRUE(torch::equal(plain->forward(x), want));
  torch::manual_seed(3);
  const auto dbl = x.to(torch::kDouble);
  const auto want_dbl = torch::dropout(dbl, 0.4, true);
  torch::manual_seed(3);
  EXPECT_TRUE(torch::equal(CounterDropout(0.4, true)->forward(dbl), want_dbl));
}

// The Transformer's attention in training on CPUs: the math path with this dropout on the
// probabilities (LibTorch's fused attention takes no dropout, its math path draws Bernoulli
// variates). Rebuilt by hand from the block's own modules, the draws in the block's order.
TEST(CounterDropout, TransformerAttentionDropsItsProbabilities) {
  ModelConfig c;
  c.name = "transformer";
  c.embed_dim = 8;
  c.heads = 2;
  c.layers = 1;
  c.patch_size = 2;
  c.mlp_ratio = 2;
  c.dropout = 0.3;
  torch::manual_seed(1);
  auto model = build_model(c, InputSpec{{1, 8, 8}, 3});
  model->train();
  auto block = std::dynamic_pointer_cast<BlockImpl>(model->named_children()["block0"]);
  ASSERT_TRUE(block);
  auto parts = block->named_children();
  auto& norm1 = *parts["norm1"]->as<torch::nn::LayerNormImpl>();
  auto& norm2 = *parts["norm2"]->as<torch::nn::LayerNormImpl>();
  // ATen's linear, as the block runs it (LibTorch's LinearImpl::forward rounds the bias add
  // separately for 3-D bfloat16 inputs).
  const auto linear = [&](const char* name, const torch::Tensor& in) {
    const auto* l = parts[name]->as<torch::nn::LinearImpl>();
    return torch::linear(in, l->weight, l->bias);
  };
  auto& drop = *parts["drop"]->as<CounterDropoutImpl>();
  const std::int64_t n = 3, t = 16, d = 8, heads = 2;
  const auto x = torch::randn({n, t, d});
  torch::manual_seed(9);
  const auto got = block->forward(x);
  torch::manual_seed(9);
  const auto qkv = linear("qkv", norm1.forward(x)).view({n, t, 3, heads, d / heads}).permute({2, 0, 3, 1, 4});
  const auto probs = torch::softmax(torch::matmul(qkv[0] / std::sqrt(4.0), qkv[1].transpose(-2, -1)), -1);
  const auto dropped = drop.forward(probs);  // the block's first draw
  EXPECT_GT(dropped.eq(0).sum().item<std::int64_t>(), 0);
  auto want = x + drop.forward(linear("proj", torch::matmul(dropped, qkv[2]).transpose(1, 2).reshape({n, t, d})));
  want = want + drop.forward(linear("fc2", torch::gelu(linear("fc1", norm2.forward(want)))));
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << (got - want).abs().max().item<double>();
  // Evaluation: LibTorch's fused attention, no dropout.
  model->eval();
  torch::NoGradGuard no_grad;
  const auto plain = torch::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
  const auto eval_want = x + linear("proj", plain.transpose(1, 2).reshape({n, t, d}));
  const auto eval_got = block->forward(x);
  EXPECT_TRUE(torch::allclose(eval_got, eval_want + linear("fc2", torch::gelu(linear("fc1", norm2.forward(eval_want)))),
                              1e-5, 1e-6));
  // bfloat16 (parameters and input as CPU autocast hands them to the attention): scores, softmax
  // and dropout in float32, as LibTorch's math path computes them, then rounded back; exactly.
  model->train();
  block->to(torch::kBFloat16);
  const auto xb = x.to(torch::kBFloat16);
  torch::manual_seed(9);
  const auto got_b = block->forward(xb);
  torch::manual_seed(9);
  const auto qkv_b = linear("qkv", norm1.forward(xb)).view({n, t, 3, heads, d / heads}).permute({2, 0, 3, 1, 4});
  const auto probs_b =
      torch::softmax(torch::matmul(qkv_b[0].to(torch::kFloat) / 2.0, qkv_b[1].to(torch::kFloat).transpose(-2, -1)), -1);
  const auto attended_b = torch::matmul(drop.forward(probs_b), qkv_b[2].to(torch::kFloat)).to(torch::kBFloat16);
  auto want_b = xb + drop.forward(linear("proj", attended_b.transpose(1, 2).reshape({n, t, d})));
  want_b = want_b + drop.forward(linear("fc2", torch::gelu(linear("fc1", norm2.forward(want_b)))));
  EXPECT_TRUE(torch::equal(got_b, want_b)) << (got_b - want_b).abs().max().item<double>();
}

// A stacked LSTM with dropout in training on CPUs: its layers one at a time with this dropout
// between them (LibTorch's LSTM draws the inter-layer masks as Bernoulli variates), rebuilt by
// hand from the module's weights; every weight gets its gradient; evaluation is the module's.
TEST(CounterDropout, LstmDropsBetweenItsLayers) {
  for (const bool bidirectional : {false, true}) {
    ModelConfig c;
    c.name = bidirectional ? "bilstm" : "lstm";
    c.hidden_size = 6;
    c.rnn_layers = 3;
    c.dropout = 0.3;
    torch::manual_seed(1);
    auto model = build_model(c, InputSpec{{4, 10}, 2});
    model->train();
    auto parts = model->named_children();
    auto& lstm = *parts["lstm"]->as<torch::nn::LSTMImpl>();
    auto& drop = *parts["drop"]->as<CounterDropoutImpl>();
    auto& head = *parts["head"]->as<torch::nn::LinearImpl>();
    const auto x = torch::randn({5, 4, 10});
    torch::manual_seed(9);
    const auto got = model->forward(x);
    torch::manual_seed(9);
    const std::int64_t directions = bidirectional ? 2 : 1, per_layer = 4 * directions;
    const auto weights = lstm.all_weights();
    const auto zeros = torch::zeros({directions, 5, 6});
    auto h = x.transpose(1, 2);
    for (std::int64_t layer = 0; layer < 3; ++layer) {
      // The same rate as the head's (model.dropout); the layer's output is a transposed view.
      if (layer > 0) h = drop.forward(h);
      const std::vector<torch::Tensor> params(weights.begin() + layer * per_layer,
                                              weights.begin() + (layer + 1) * per_layer);
      h = std::get<0>(torch::lstm(h, {zeros, zeros}, params, true, 1, 0.0, true, bidirectional, true));
    }
    auto last = h.select(1, 9);
    if (bidirectional) last = torch::cat({h.select(1, 9).narrow(1, 0, 6), h.select(1, 0).narrow(1, 6, 6)}, 1);
    const auto want = head.forward(drop.forward(last));
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << c.name << ": " << (got - want).abs().max().item<double>();
    got.sum().backward();
    for (const auto& w : lstm.parameters()) EXPECT_TRUE(w.grad().defined() && w.grad().abs().sum().item<double>() > 0);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto eval_out = std::get<0>(lstm.forward(x.transpose(1, 2)));
    auto eval_last = eval_out.select(1, 9);
    if (bidirectional)
      eval_last = torch::cat({eval_out.select(1, 9).narrow(1, 0, 6), eval_out.select(1, 0).narrow(1, 6, 6)}, 1);
    EXPECT_TRUE(torch::equal(model->forward(x), head.forward(eval_last)));
    // The reference's own slicing of the weights: without dropout, layer by layer is the module.
    auto plain = x.transpose(1, 2);
    for (std::int64_t layer = 0; layer < 3; ++layer) {
      const std::vector<torch::Tensor> params(weights.begin() + layer * per_layer,
                                              weights.begin() + (layer + 1) * per_layer);
      plain = std::get<0>(torch::lstm(plain, {zeros, zeros}, params, true, 1, 0.0, false, bidirectional, true));
    }
    EXPECT_TRUE(torch::allclose(plain, eval_out, 1e-6, 1e-7));
  }
}

}  // namespace
}  // namespace hpctrain
