// Gradient checkpointing: the same gradients, buffers and outputs as the plain forward.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include "models/Checkpointing.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

struct DenseBlock : BlockImpl {
  DenseBlock(std::int64_t width) {
    fc = register_module("fc", torch::nn::Linear(width, width));
    bn = register_module("bn", torch::nn::BatchNorm1d(width));
    drop = register_module("drop", torch::nn::Dropout(0.3));
  }
  torch::Tensor forward(torch::Tensor x) override {
    return x + drop->forward(torch::relu(bn->forward(fc->forward(x))));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Dropout drop{nullptr};
};

struct Stack : torch::nn::Module {
  explicit Stack(std::vector<bool> plan) : plan_(std::move(plan)) {
    for (std::size_t i = 0; i < plan_.size(); ++i) {
      blocks.push_back(register_module("b" + std::to_string(i), std::make_shared<DenseBlock>(16)));
    }
    head = register_module("head", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (std::size_t i = 0; i < blocks.size(); ++i) x = checkpointed_forward(*blocks[i], x, plan_[i]);
    return head->forward(x);
  }
  std::vector<bool> plan_;
  std::vector<std::shared_ptr<DenseBlock>> blocks;
  torch::nn::Linear head{nullptr};
};

struct Result {
  std::vector<torch::Tensor> grads, buffers;
  torch::Tensor loss;
};

Result train_step(const std::vector<bool>& plan, bool autocast = false) {
  torch::manual_seed(7);
  Stack model(plan);
  auto x = torch::randn({32, 16});  // the data: no gradient wanted
  auto y = torch::randint(0, 3, {32});
  torch::manual_seed(11);  // dropout draws
  Result r;
  {
    if (autocast) {
      at::autocast::set_autocast_dtype(torch::kCPU, at::kBFloat16);
      at::autocast::set_autocast_enabled(torch::kCPU, true);
    }
    r.loss = torch::nn::functional::cross_entropy(model.forward(x).to(torch::kFloat), y);
    at::autocast::set_autocast_enabled(torch::kCPU, false);
  }
  r.loss.backward();
  for (auto& p : model.parameters()) r.grads.push_back(p.grad().clone());
  for (auto& b : model.buffers()) r.buffers.push_back(b.clone());
  return r;
}

void expect_identical(const Result& a, const Result& b) {
  EXPECT_TRUE(torch::equal(a.loss, b.loss));
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) EXPECT_TRUE(torch::equal(a.grads[i], b.grads[i])) << "grad " << i;
  ASSERT_EQ(a.buffers.size(), b.buffers.size());
  for (std::size_t i = 0; i < a.buffers.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.buffers[i], b.buffers[i])) << "buffer " << i;
  }
}

TEST(Checkpointing, GradientsAndBuffersEqualThePlainForwardBitwise) {
  const auto plain = train_step({false, false, false, false});
  expect_identical(plain, train_step({true, true, true, true}));    // every block
  expect_identical(plain, train_step({true, false, true, false}));  // every other
  expect_identical(plain, train_step({false, false, false, true}));
}

TEST(Checkpointing, TheSameUnderAutocast) {
  expect_identical(train_step({false, false, false}, true), train_step({true, true, true}, true));
}

// Two steps under autocast, nested as the trainer nests it, with an update in between: the
// second forward must read the updated weights, not casts the first backward's recomputation
// left in autocast's cache.
torch::Tensor second_step_loss(const std::vector<bool>& plan) {
  torch::manual_seed(7);
  Stack model(plan);
  auto x = torch::randn({32, 16});
  auto y = torch::randint(0, 3, {32});
  torch::Tensor loss;
  for (int step = 0; step < 2; ++step) {
    at::autocast::set_autocast_dtype(torch::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(torch::kCPU, true);
    at::autocast::increment_nesting();
    loss = torch::nn::functional::cross_entropy(model.forward(x).to(torch::kFloat), y);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(torch::kCPU, false);
    if (step == 1) break;
    loss.backward();
    torch::NoGradGuard no_grad;
    for (auto& p : model.parameters()) p.sub_(p.grad() * 0.5);
  }
  return loss;
}

TEST(Checkpointing, TheNextForwardUnderAutocastReadsTheUpdatedWeights) {
  const auto plain = second_step_loss({false, false, false});
  const auto checkpointed = second_step_loss({true, false, true});
  EXPECT_TRUE(torch::equal(plain, checkpointed)) << plain.item<float>() << " vs " << checkpointed.item<float>();
}

TEST(Checkpointing, TheFirstBlockOnDataStillTrainsItsParameters) {
  const auto r = train_step({true});
  for (const auto& g : r.grads) EXPECT_GT(g.abs().sum().item<double>(), 0.0);
}

TEST(Checkpointing, EvaluationAndNoGradRunPlainly) {
  torch::manual_seed(3);
  Stack model({true, true});
  model.eval();
  auto x = torch::randn({4, 16});
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(model.forward(x).requires_grad());
}

TEST(Checkpointing, PlanEveryNthAndListed) {
  EXPECT_EQ(checkpoint_plan(5, 0, {}), (std::vector<bool>{false, false, false, false, false}));
  EXPECT_EQ(checkpoint_plan(5, 1, {}), (std::vector<bool>{true, true, true, true, true}));
  EXPECT_EQ(checkpoint_plan(5, 2, {}), (std::vector<bool>{true, false, true, false, true}));
  EXPECT_EQ(checkpoint_plan(5, 0, {1, 4}), (std::vector<bool>{false, true, false, false, true}));
  EXPECT_THROW(checkpoint_plan(3, 0, {3}), ConfigError);
}

}  // namespace
}  // namespace hpctrain
