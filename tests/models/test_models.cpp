#include <gtest/gtest.h>

#include "models/Model.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

TEST(ModelRegistry, BuildsEveryRegisteredModelWithTheRightOutput) {
  const InputSpec in{{1, 28, 28}, 10};
  for (const auto& name : registered_models()) {
    ModelConfig c;
    c.name = name;
    c.hidden = {64, 32};
    c.channels = {8, 16};
    c.fc_width = 32;
    c.dropout = 0.1;
    auto m = build_model(c, in);
    auto y = m->forward(torch::randn({5, 1, 28, 28}));
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
  for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(torch::equal(plain[i], checkpointed[i])) << c.name << " " << i;
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
