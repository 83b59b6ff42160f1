// The pipeline view of the models (Model.hpp): the pieces in order are forward(), also when
// each piece runs on its own graph as on a pipeline stage, and every parameter and buffer
// belongs to one piece.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "models/Model.hpp"

namespace hpctrain {
namespace {

struct Case {
  std::string what;
  ModelConfig config;
  InputSpec input;
  torch::Tensor x;
  GroupSum group;  // sync_batch: a bound group (one rank's sums), as the trainer binds one
};

ModelPtr build(const Case& c, std::int64_t checkpoint_every) {
  ModelConfig config = c.config;
  config.checkpoint_every = checkpoint_every;
  torch::manual_seed(5);
  return build_model(config, c.input, c.group);
}

std::vector<Case> splittable_cases() {
  std::vector<Case> cases;
  ModelConfig m;
  m.name = "mlp";
  m.hidden = {16, 8, 8};
  m.dropout = 0.3;
  cases.push_back({"mlp", m, InputSpec{{1, 6, 6}, 4}, torch::randn({8, 1, 6, 6}), {}});
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4, 8};
  c.fc_width = 16;
  c.dropout = 0.2;
  cases.push_back({"cnn", c, InputSpec{{2, 12, 12}, 5}, torch::randn({6, 2, 12, 12}), {}});
  c.norm = "sync_batch";
  cases.push_back(
      {"cnn sync_batch", c, InputSpec{{2, 12, 12}, 5}, torch::randn({6, 2, 12, 12}), [](torch::Tensor&) {}});
  ModelConfig r;
  r.name = "resnet";
  r.width = 8;
  r.blocks = {1, 2};
  r.dropout = 0.2;
  cases.push_back({"resnet basic", r, InputSpec{{1, 16, 16}, 10}, torch::randn({4, 1, 16, 16}), {}});
  r.norm = "sync_batch";
  r.stem = "imagenet";
  cases.push_back({"resnet basic sync_batch imagenet", r, InputSpec{{3, 16, 16}, 10}, torch::randn({4, 3, 16, 16}),
                   [](torch::Tensor&) {}});
  r.block = "bottleneck";
  r.norm = "layer";
  r.stem = "cifar";
  cases.push_back({"resnet bottleneck", r, InputSpec{{1, 16, 16}, 10}, torch::randn({4, 1, 16, 16}), {}});
  ModelConfig t;
  t.name = "transformer";
  t.embed_dim = 32;
  t.heads = 4;
  t.layers = 3;
  t.dropout = 0.1;
  t.patch_size = 4;
  cases.push_back({"transformer patches", t, InputSpec{{1, 16, 16}, 10}, torch::randn({4, 1, 16, 16}), {}});
  cases.push_back({"transformer series", t, InputSpec{{12, 3}, 1}, torch::randn({4, 12, 3}), {}});
  cases.push_back({"transformer table", t, InputSpec{{10}, 2}, torch::randn({4, 10}), {}});
  ModelConfig causal = t;
  causal.causal = true;
  cases.push_back({"transformer causal", causal, InputSpec{{12, 3}, 1}, torch::randn({4, 12, 3}), {}});
  return cases;
}

std::int64_t expected_blocks(const ModelConfig& c) {
  if (c.name == "mlp") return static_cast<std::int64_t>(c.hidden.size());
  if (c.name == "cnn") return static_cast<std::int64_t>(c.channels.size());
  if (c.name == "resnet") {
    std::int64_t n = 0;
    for (auto b : c.blocks) n += b;
    return n;
  }
  return c.layers;
}

torch::Tensor through_pieces(ModelImpl& m, torch::Tensor x) {
  for (std::int64_t piece = 0; piece <= m.pipeline_blocks() + 1; ++piece) x = m.run_piece(piece, x);
  return x;
}

// One training step's loss, gradients, and the buffers after it.
struct Step {
  std::vector<torch::Tensor> values;
};

Step collect(ModelImpl& m, const torch::Tensor& loss) {
  Step s{{loss.detach()}};
  for (auto& p : m.parameters()) s.values.push_back(p.grad().clone());
  for (auto& b : m.buffers()) s.values.push_back(b.clone());
  return s;
}

Step step_forward(ModelImpl& m, const torch::Tensor& x) {
  m.train();
  torch::manual_seed(9);
  auto loss = m.forward(x).pow(2).mean();
  loss.backward();
  return collect(m, loss);
}

// As pipeline stages run it: each piece on its own graph, its input a leaf (an activation
// received), its output's gradient handed back to the piece before.
Step step_split(ModelImpl& m, const torch::Tensor& x) {
  m.train();
  torch::manual_seed(9);
  std::vector<torch::Tensor> inputs, outputs;
  torch::Tensor h = x;
  for (std::int64_t piece = 0; piece <= m.pipeline_blocks() + 1; ++piece) {
    inputs.push_back(piece == 0 ? x : h.detach().requires_grad_());
    h = m.run_piece(piece, inputs.back());
    outputs.push_back(h);
  }
  auto loss = h.pow(2).mean();
  loss.backward();
  for (auto piece = static_cast<std::int64_t>(outputs.size()) - 2; piece >= 0; --piece) {
    const auto p = static_cast<std::size_t>(piece);
    if (outputs[p].requires_grad()) torch::autograd::backward({outputs[p]}, {inputs[p + 1].grad()});
  }
  return collect(m, loss);
}

void expect_equal(const Step& a, const Step& b, const std::string& what) {
  ASSERT_EQ(a.values.size(), b.values.size()) << what;
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.values[i], b.values[i]))
        << what << ": value " << i << " max diff " << (a.values[i] - b.values[i]).abs().max().item<double>();
  }
}

TEST(PipelinePieces, PiecesInOrderAreForwardBitForBitInEvalAndTrainMode) {
  for (const auto& c : splittable_cases()) {
    auto a = build(c, 0), b = build(c, 0);
    a->eval();
    b->eval();
    EXPECT_TRUE(torch::equal(a->forward(c.x), through_pieces(*b, c.x))) << c.what << " (eval)";
    a->train();
    b->train();
    torch::manual_seed(9);
    const auto ya = a->forward(c.x);
    torch::manual_seed(9);
    const auto yb = through_pieces(*b, c.x);
    EXPECT_TRUE(torch::equal(ya, yb)) << c.what << " (train, dropout " << c.config.dropout << ")";
    // Batch-norm statistics updated alike.
    const auto ba = a->buffers(), bb = b->buffers();
    for (std::size_t i = 0; i < ba.size(); ++i) EXPECT_TRUE(torch::equal(ba[i], bb[i])) << c.what << " buffer " << i;
  }
}

TEST(PipelinePieces, PiecesOnTheirOwnGraphsGiveForwardsGradientsWithAndWithoutCheckpointing) {
  for (const auto& c : splittable_cases()) {
    for (std::int64_t every : {0, 1}) {
      auto a = build(c, every), b = build(c, every);
      expect_equal(step_forward(*a, c.x), step_split(*b, c.x), c.what + " checkpoint_every=" + std::to_string(every));
    }
  }
}

TEST(PipelinePieces, EveryParameterAndBufferBelongsToOnePieceInRegistrationOrder) {
  for (const auto& c : splittable_cases()) {
    auto m = build(c, 0);
    const auto blocks = m->pipeline_blocks();
    ASSERT_EQ(blocks, expected_blocks(c.config)) << c.what;
    const auto params = m->parameter_pieces(), buffers = m->buffer_pieces();
    ASSERT_EQ(params.size(), m->parameters().size()) << c.what;
    ASSERT_EQ(buffers.size(), m->buffers().size()) << c.what;
    // Every family registers its stem first and its head last, blocks in order.
    for (const auto* pieces : {&params, &buffers}) {
      for (std::size_t i = 0; i < pieces->size(); ++i) {
        EXPECT_GE((*pieces)[i], 0) << c.what;
        EXPECT_LE((*pieces)[i], blocks + 1) << c.what;
        if (i > 0) {
          EXPECT_LE((*pieces)[i - 1], (*pieces)[i]) << c.what << " entry " << i;
        }
      }
    }
    const auto counts = piece_parameter_counts(*m);
    ASSERT_EQ(static_cast<std::int64_t>(counts.size()), blocks + 2) << c.what;
    std::int64_t total = 0;
    for (std::size_t piece = 0; piece < counts.size(); ++piece) {
      total += counts[piece];
      if (piece >= 1 && static_cast<std::int64_t>(piece) <= blocks) {
        EXPECT_GT(counts[piece], 0) << c.what << ": block piece " << piece << " without parameters";
      }
    }
    EXPECT_GT(counts.back(), 0) << c.what << ": the head holds the output layer";
    EXPECT_EQ(total, parameter_count(*m)) << c.what;
  }
}

TEST(PipelinePieces, PiecesHoldTheFamiliesStemsBlocksAndHeads) {
  ModelConfig m;
  m.name = "mlp";
  m.hidden = {8, 4};
  m.batch_norm = false;
  // flatten | 6->8 | 8->4 | 4->3, weights and biases
  EXPECT_EQ(piece_parameter_counts(*build_model(m, InputSpec{{6}, 3})), (std::vector<std::int64_t>{0, 56, 36, 15}));
  ModelConfig r;
  r.name = "resnet";
  r.width = 4;
  r.blocks = {1, 1};
  auto resnet = build_model(r, InputSpec{{1, 8, 8}, 2});
  for (const auto& p : resnet->named_parameters()) {
    const auto& name = p.key();
    const auto expected = name.rfind("stem.", 0) == 0     ? 0
                          : name.rfind("block0.", 0) == 0 ? 1
                          : name.rfind("block1.", 0) == 0 ? 2
                                                          : 3;
    EXPECT_EQ(resnet->piece_of(name), expected) << name;
  }
  ModelConfig t;
  t.name = "transformer";
  t.embed_dim = 8;
  t.heads = 2;
  t.layers = 11;  // block1 and block10: a name prefix is not a module path
  auto transformer = build_model(t, InputSpec{{5}, 1});
  EXPECT_EQ(transformer->piece_of("position"), 0);
  EXPECT_EQ(transformer->piece_of("feature_bias"), 0);
  EXPECT_EQ(transformer->piece_of("block1.qkv.weight"), 2);
  EXPECT_EQ(transformer->piece_of("block10.qkv.weight"), 11);
  EXPECT_EQ(transformer->piece_of("norm.weight"), 12);
  EXPECT_EQ(transformer->piece_of("head.bias"), 12);
  EXPECT_THROW(transformer->piece_of("nothing.weight"), std::logic_error);
  EXPECT_THROW(transformer->run_piece(13, torch::randn({2, 5})), std::out_of_range);
  EXPECT_THROW(transformer->run_piece(-1, torch::randn({2, 5})), std::out_of_range);
}

// model.causal: a block's token j never sees the tokens after it, in evaluation and in training
// with dropout (on CPUs hpctrain's math path with counter-based dropout, or LibTorch's kernel);
// without it every token sees every other.
TEST(PipelinePieces, ACausalBlockKeepsEachTokenFromTheTokensAfterIt) {
  for (const bool causal : {true, false}) {
    for (const bool fused : {true, false}) {
      ModelConfig t;
      t.name = "transformer";
      t.embed_dim = 16;
      t.heads = 2;
      t.layers = 1;
      t.dropout = 0.2;
      t.causal = causal;
      t.fused_kernels = fused;
      auto model = build_model(t, InputSpec{{6, 5}, 2}, {});  // series windows: 5 tokens
      for (const bool train : {false, true}) {
        model->train(train);
        const auto x = torch::randn({3, 5, 16});
        auto later = x.clone();
        later.select(1, 4).add_(1.0);  // the last token only
        torch::manual_seed(9);
        const auto a = model->run_piece(1, x);
        torch::manual_seed(9);
        const auto b = model->run_piece(1, later);
        const std::string where =
            std::string(causal ? "causal" : "full") + (fused ? " fused" : "") + (train ? " training" : " evaluation");
        EXPECT_EQ(torch::equal(a.narrow(1, 0, 4), b.narrow(1, 0, 4)), causal) << where;
        EXPECT_FALSE(torch::equal(a.select(1, 4), b.select(1, 4))) << where;
      }
    }
  }
}

TEST(PipelinePieces, TheRecurrentFamilyIsOnePiece) {
  ModelConfig c;
  c.hidden_size = 8;
  c.rnn_layers = 2;
  c.channels = {4};
  c.heads = 2;
  for (const char* name : {"lstm", "bilstm", "cnn_bilstm", "forecaster"}) {
    c.name = name;
    auto m = build_model(c, InputSpec{{3, 10}, 1});
    EXPECT_EQ(m->pipeline_blocks(), 0) << name;
    EXPECT_THROW(m->run_piece(0, torch::randn({2, 3, 10})), std::logic_error) << name;
    EXPECT_EQ(m->parameter_pieces(), std::vector<std::int64_t>(m->parameters().size(), 0)) << name;
    EXPECT_EQ(m->buffer_pieces(), std::vector<std::int64_t>(m->buffers().size(), 0)) << name;
    EXPECT_EQ(piece_parameter_counts(*m), std::vector<std::int64_t>{parameter_count(*m)}) << name;
  }
}

}  // namespace
}  // namespace hpctrain
