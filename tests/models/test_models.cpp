#include <gtest/gtest.h>

#include <set>
#include <string>

#include "config/Schema.hpp"
#include "models/Model.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

TEST(ModelRegistry, BuildsEveryRegisteredModelWithTheRightOutput) {
  const std::set<std::string> sequence{"lstm", "bilstm", "cnn_bilstm", "forecaster"};
  for (const auto& name : registered_models()) {
    ModelConfig c;
    c.name = name;
    c.hidden = {64, 32};
    c.channels = {8, 16};
    c.fc_width = 32;
    c.dropout = 0.1;
    c.heads = 4;
    c.hidden_size = 16;
    // Images for the image and table models, series windows [V, T] for the sequence models.
    const bool series = sequence.count(name) > 0;
    auto m = build_model(c, series ? InputSpec{{3, 20}, 10} : InputSpec{{1, 28, 28}, 10});
    auto y = m->forward(series ? torch::randn({5, 3, 20}) : torch::randn({5, 1, 28, 28}));
    EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{5, 10})) << name;
    EXPECT_GT(parameter_count(*m), 0) << name;
  }
}

TEST(ModelRegistry, CnnParameterCountFollowsTheConfig) {
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4};
  c.fc_width = 6;
  c.batch_norm = false;
  auto m = build_model(c, InputSpec{{1, 8, 8}, 3});
  // conv 1->4 3x3 + bias, fc 4*4*4 -> 6, classifier 6 -> 3
  EXPECT_EQ(parameter_count(*m), (4 * 9 + 4) + (64 * 6 + 6) + (6 * 3 + 3));
}

TEST(ModelRegistry, UnknownNameAndTooManyStagesAreConfigErrors) {
  ModelConfig c;
  c.name = "transformer9000";
  EXPECT_THROW(build_model(c, InputSpec{{1, 28, 28}, 10}), ConfigError);
  c.name = "cnn";
  c.channels = {8, 8, 8, 8, 8, 8};
  try {
    build_model(c, InputSpec{{1, 28, 28}, 10});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.channels"), std::string::npos);
  }
}

TEST(ModelRegistry, ChannelsLastGivesTheSameOutputsAndGradients) {
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4, 8};
  c.fc_width = 16;
  torch::manual_seed(3);
  auto a = build_model(c, InputSpec{{3, 8, 8}, 5});
  torch::manual_seed(3);
  auto b = build_model(c, InputSpec{{3, 8, 8}, 5});
  to_channels_last(*b);
  auto x = torch::randn({6, 3, 8, 8});
  auto ya = a->forward(x);
  auto yb = b->forward(x.contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::allclose(ya, yb, 1e-5, 1e-5));
  ya.sum().backward();
  yb.sum().backward();
  const auto pa = a->parameters(), pb = b->parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::allclose(pa[i].grad(), pb[i].grad(), 1e-4, 1e-5)) << i;
}

TEST(ModelRegistry, ResNetParameterCountsMatchTheReferenceArchitectures) {
  // torchvision's resnet18 and resnet50 (ImageNet stem, 1000 classes): 11,689,512 and
  // 25,557,032 parameters.
  ModelConfig c;
  c.name = "resnet";
  c.stem = "imagenet";
  c.blocks = {2, 2, 2, 2};
  EXPECT_EQ(parameter_count(*build_model(c, InputSpec{{3, 224, 224}, 1000})), 11689512);
  c.block = "bottleneck";
  c.blocks = {3, 4, 6, 3};
  EXPECT_EQ(parameter_count(*build_model(c, InputSpec{{3, 224, 224}, 1000})), 25557032);
}

TEST(ModelRegistry, TransformerTakesImagesSequencesAndTables) {
  ModelConfig c;
  c.name = "transformer";
  c.embed_dim = 32;
  c.heads = 4;
  c.layers = 2;
  c.patch_size = 7;
  EXPECT_EQ(build_model(c, InputSpec{{1, 28, 28}, 10})->forward(torch::randn({3, 1, 28, 28})).sizes(),
            (std::vector<std::int64_t>{3, 10}));
  EXPECT_EQ(build_model(c, InputSpec{{24, 5}, 1})->forward(torch::randn({3, 24, 5})).sizes(),
            (std::vector<std::int64_t>{3, 1}));
  EXPECT_EQ(build_model(c, InputSpec{{10}, 2})->forward(torch::randn({3, 10})).sizes(),
            (std::vector<std::int64_t>{3, 2}));
  c.patch_size = 5;
  EXPECT_THROW(build_model(c, InputSpec{{1, 28, 28}, 10}), ConfigError);
  c.patch_size = 7;
  c.heads = 5;
  EXPECT_THROW(build_model(c, InputSpec{{1, 28, 28}, 10}), ConfigError);
}

// The same parameters (same seed), one training step with and without checkpointing every
// block: bitwise equal gradients, outputs and batch-norm statistics.
void expect_checkpointing_exact(ModelConfig c, const InputSpec& in, const torch::Tensor& x) {
  auto step = [&](std::int64_t every) {
    c.checkpoint_every = every;
    torch::manual_seed(5);
    auto m = build_model(c, in);
    m->train();
    torch::manual_seed(9);
    auto loss = m->forward(x).pow(2).mean();
    loss.backward();
    std::vector<torch::Tensor> out{loss.detach()};
    for (auto& p : m->parameters()) out.push_back(p.grad().clone());
    for (auto& b : m->buffers()) out.push_back(b.clone());
    return out;
  };
  const auto plain = step(0), checkpointed = step(1);
  ASSERT_EQ(plain.size(), checkpointed.size());
  for (std::size_t i = 0; i < plain.size(); ++i)
    EXPECT_TRUE(torch::equal(plain[i], checkpointed[i]))
        << c.name << " " << i << " max diff " << (plain[i] - checkpointed[i]).abs().max().item<double>() << " of "
        << plain[i].abs().max().item<double>();
}

TEST(ModelRegistry, CheckpointingGivesTheSameGradientsForEveryBlockModel) {
  ModelConfig r;
  r.name = "resnet";
  r.width = 8;
  r.blocks = {1, 2};
  r.dropout = 0.2;
  expect_checkpointing_exact(r, InputSpec{{1, 16, 16}, 10}, torch::randn({4, 1, 16, 16}));
  r.block = "bottleneck";
  r.norm = "layer";
  expect_checkpointing_exact(r, InputSpec{{1, 16, 16}, 10}, torch::randn({4, 1, 16, 16}));
  ModelConfig t;
  t.name = "transformer";
  t.embed_dim = 32;
  t.heads = 4;
  t.layers = 3;
  t.dropout = 0.1;  // dropout draws must repeat in the recomputation
  t.patch_size = 4;
  expect_checkpointing_exact(t, InputSpec{{1, 16, 16}, 10}, torch::randn({4, 1, 16, 16}));
  expect_checkpointing_exact(t, InputSpec{{12, 3}, 1}, torch::randn({4, 12, 3}));
}

TEST(ModelRegistry, CheckpointingGivesTheSameGradientsForTheLayeredAndSequenceModels) {
  ModelConfig m;
  m.name = "mlp";
  m.hidden = {32, 16, 8};
  m.dropout = 0.3;  // batch norm statistics and dropout masks in every block
  expect_checkpointing_exact(m, InputSpec{{1, 6, 6}, 4}, torch::randn({8, 1, 6, 6}));
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4, 8};
  c.fc_width = 16;
  c.dropout = 0.2;
  expect_checkpointing_exact(c, InputSpec{{2, 12, 12}, 5}, torch::randn({6, 2, 12, 12}));
  ModelConfig s;
  s.hidden_size = 8;
  s.rnn_layers = 2;
  s.dropout = 0.25;  // between the LSTM layers, and before the head
  s.channels = {6, 6};
  s.heads = 2;
  for (const char* name : {"lstm", "bilstm", "cnn_bilstm", "forecaster"}) {
    s.name = name;
    expect_checkpointing_exact(s, InputSpec{{3, 16}, 2}, torch::randn({5, 3, 16}));
  }
}

TEST(ModelRegistry, EveryModelNamesItsBlocksForCheckpointing) {
  // model.checkpoint_blocks must name an existing block: the count per model is fixed by
  // its structure (docs/models.md).
  auto blocks_of = [](ModelConfig c, const InputSpec& in) {
    for (std::int64_t i = 0;; ++i) {
      c.checkpoint_blocks = {i};
      try {
        build_model(c, in);
      } catch (const ConfigError&) {
        return i;
      }
    }
  };
  ModelConfig c;
  c.hidden = {8, 8, 8};
  c.channels = {4, 4};
  c.hidden_size = 8;
  c.heads = 2;
  c.name = "mlp";
  EXPECT_EQ(blocks_of(c, InputSpec{{6}, 1}), 3);
  c.name = "cnn";
  EXPECT_EQ(blocks_of(c, InputSpec{{1, 8, 8}, 2}), 2);
  c.name = "lstm";
  EXPECT_EQ(blocks_of(c, InputSpec{{2, 8}, 1}), 1);
  c.name = "cnn_bilstm";
  EXPECT_EQ(blocks_of(c, InputSpec{{2, 8}, 1}), 3);
  c.name = "forecaster";
  EXPECT_EQ(blocks_of(c, InputSpec{{2, 8}, 1}), 4);
}

TEST(ModelRegistry, NormalizationKindsKeepBatchNormNames) {
  // Synchronized batch norm stores what batch norm stores, under the same names: checkpoints
  // and exports read the same either way.
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4};
  c.fc_width = 8;
  auto names = [&](const std::string& norm) {
    c.norm = norm;
    std::vector<std::string> out;
    auto m = build_model(c, InputSpec{{1, 8, 8}, 2});
    for (const auto& p : m->named_parameters()) out.push_back(p.key() + std::to_string(p.value().numel()));
    for (const auto& b : m->named_buffers()) out.push_back(b.key() + std::to_string(b.value().numel()));
    return out;
  };
  EXPECT_EQ(names("batch"), names("sync_batch"));
  // Without model.batch_norm the CNN has no normalization layers, and biases instead.
  c.batch_norm = false;
  EXPECT_EQ(parameter_count(*build_model(c, InputSpec{{1, 8, 8}, 2})), (4 * 9 + 4) + (4 * 16 * 8 + 8) + (8 * 2 + 2));
  c.batch_norm = true;
  c.norm = "layer";
  EXPECT_TRUE(build_model(c, InputSpec{{1, 8, 8}, 2})->named_buffers().is_empty());
  // One rank (no group): the same outputs as batch norm.
  c.norm = "batch";
  torch::manual_seed(1);
  auto plain = build_model(c, InputSpec{{1, 8, 8}, 2});
  c.norm = "sync_batch";
  torch::manual_seed(1);
  auto sync = build_model(c, InputSpec{{1, 8, 8}, 2});
  const auto x = torch::randn({6, 1, 8, 8});
  EXPECT_TRUE(torch::allclose(plain->forward(x), sync->forward(x), 1e-5, 1e-6));
}

TEST(ModelRegistry, SequenceModelsTakeSeriesWindows) {
  ModelConfig c;
  c.hidden_size = 16;
  c.rnn_layers = 2;
  c.channels = {8, 8};
  c.heads = 4;
  const InputSpec series{{5, 48}, 1};  // 5 variables, 48 steps, one regression output
  for (const char* name : {"lstm", "bilstm", "cnn_bilstm", "forecaster", "transformer"}) {
    c.name = name;
    if (c.name == "transformer") {
      c.embed_dim = 16;
      c.layers = 1;
    }
    auto m = build_model(c, series);
    const auto y = m->forward(torch::randn({3, 5, 48}));
    EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{3, 1})) << name;
    y.sum().backward();
    for (const auto& p : m->parameters()) {
      EXPECT_TRUE(p.grad().defined()) << name << ": a parameter without gradient";
    }
    if (c.name != "transformer") {
      EXPECT_THROW(build_model(c, InputSpec{{1, 28, 28}, 10}), ConfigError) << name;
    }
  }
  // The BiLSTM reads the window from both ends: twice the LSTM's head inputs.
  c.name = "lstm";
  const auto uni = parameter_count(*build_model(c, series));
  c.name = "bilstm";
  EXPECT_GT(parameter_count(*build_model(c, series)), uni);
  // The forecaster's attention splits its width into heads.
  c.name = "forecaster";
  c.heads = 3;
  EXPECT_THROW(build_model(c, series), ConfigError);
}

// The end of the window matters: changing only the last step changes an LSTM's output,
// and the causal attention of the forecaster lets the last step see all earlier ones.
TEST(ModelRegistry, SequenceModelsReadTheWholeWindow) {
  ModelConfig c;
  c.hidden_size = 8;
  c.heads = 2;
  c.rnn_layers = 1;
  for (const char* name : {"lstm", "forecaster"}) {
    c.name = name;
    torch::manual_seed(0);
    auto m = build_model(c, InputSpec{{2, 10}, 1});
    m->eval();
    auto x = torch::randn({1, 2, 10});
    auto first = x.clone();
    first.index_put_({0, 0, 0}, 5.0);
    auto last = x.clone();
    last.index_put_({0, 0, 9}, 5.0);
    const auto y = m->forward(x);
    EXPECT_FALSE(torch::allclose(m->forward(first), y)) << name << " ignores the first step";
    EXPECT_FALSE(torch::allclose(m->forward(last), y)) << name << " ignores the last step";
  }
}

TEST(ModelRegistry, SchemaChoicesAreTheRegisteredModels) {
  // config/ sits below models/ and cannot ask the registry: this test holds the two lists together.
  std::set<std::string> schema;
  for (const auto& spec : config_schema()) {
    if (spec.path == "model.name") schema.insert(spec.choices.begin(), spec.choices.end());
  }
  const auto names = registered_models();
  EXPECT_EQ(schema, std::set<std::string>(names.begin(), names.end()));
}
