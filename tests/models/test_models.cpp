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
