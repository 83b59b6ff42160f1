// precision.params=low: low-precision GEMM weights with fp32 masters (train/MasterWeights).
#include <gtest/gtest.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <memory>

#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "train/MasterWeights.hpp"
#include "train/MixedPrecision.hpp"

namespace hpctrain {
namespace {

// Linear, LayerNorm, Conv: two GEMM weights, and biases and a scale that stay fp32.
struct Net : torch::nn::Module {
  Net() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 3).padding(1)));
    fc = register_module("fc", torch::nn::Linear(3 * 4 * 4, 5));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({5})));
  }
  torch::Tensor forward(const torch::Tensor& x) { return norm(fc(torch::relu(conv(x)).flatten(1))); }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};

torch::Tensor loss_of(Net& net, const torch::Tensor& x) {
  AutocastScope autocast("bf16", torch::kCPU);
  return net.forward(x).to(torch::kFloat).pow(2).mean();
}

struct CountingHook : torch::autograd::PostAccumulateGradHook {
  explicit CountingHook(int* count) : count_(count) {}
  void operator()(const torch::autograd::Variable& /*tensor*/) override { ++*count_; }
  int* count_;
};

TEST(MasterWeights, ConvertsTheGemmWeightsAndKeepsTheirValuesAsMasters) {
  torch::manual_seed(1);
  Net net;
  const auto before = net.parameters();
  std::vector<torch::Tensor> values;
  for (const auto& p : before) values.push_back(p.detach().clone());
  MasterWeights weights(net, net.parameters(), torch::kBFloat16);
  EXPECT_EQ(weights.converted(), 2U);
  EXPECT_EQ(net.conv->weight.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(net.fc->weight.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(net.conv->bias.scalar_type(), torch::kFloat);
  EXPECT_EQ(net.norm->weight.scalar_type(), torch::kFloat);
  EXPECT_EQ(weights.compute_bytes(), (3 * 2 * 3 * 3 + 5 * 48) * 2);
  const auto& masters = weights.masters();
  ASSERT_EQ(masters.size(), before.size());
  for (std::size_t i = 0; i < masters.size(); ++i) {
    EXPECT_EQ(masters[i].scalar_type(), torch::kFloat);
    EXPECT_TRUE(masters[i].requires_grad());
    EXPECT_TRUE(torch::equal(masters[i], values[i])) << i;  // bitwise: nothing rounded
    const bool converted = before[i].scalar_type() == torch::kBFloat16;
    EXPECT_EQ(masters[i].unsafeGetTensorImpl() == before[i].unsafeGetTensorImpl(), !converted) << i;
    if (converted) {
      EXPECT_TRUE(torch::equal(before[i], values[i].to(torch::kBFloat16))) << i;
    }
  }
}

TEST(MasterWeights, GradientsArriveInTheMastersAndFireTheirHooks) {
  torch::manual_seed(2);
  Net net;
  Net reference;  // the same weights converted by hand: autograd's own low-precision gradients
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < net.parameters().size(); ++i) reference.parameters()[i].copy_(net.parameters()[i]);
    reference.conv->weight.set_data(reference.conv->weight.detach().to(torch::kBFloat16));
    reference.fc->weight.set_data(reference.fc->weight.detach().to(torch::kBFloat16));
  }
  MasterWeights weights(net, net.parameters(), torch::kBFloat16);
  const auto& masters = weights.masters();  // conv weight, conv bias, fc weight, ...
  // masters[0] as a bucketed reducer has it: an fp32 gradient view and a ready hook. masters[2]
  // as sharded stage 2 has it: a hook and no gradient, which takes autograd's own.
  int fired = 0, fired_sharded = 0;
  masters[0].mutable_grad() = torch::zeros_like(masters[0]);
  torch::autograd::impl::set_post_acc_grad_hooks(masters[0], std::make_unique<CountingHook>(&fired));
  torch::autograd::impl::set_post_acc_grad_hooks(masters[2], std::make_unique<CountingHook>(&fired_sharded));
  const auto x = torch::randn({4, 2, 4, 4});
  loss_of(net, x).backward();
  loss_of(reference, x).backward();
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(fired_sharded, 1);
  EXPECT_FALSE(net.conv->weight.grad().defined());  // dropped once moved into the master
  EXPECT_EQ(masters[2].grad().scalar_type(), torch::kBFloat16);
  for (std::size_t i = 0; i < masters.size(); ++i) {
    ASSERT_TRUE(masters[i].grad().defined()) << i;
    EXPECT_EQ(masters[i].grad().scalar_type(), i == 2 ? torch::kBFloat16 : torch::kFloat) << i;
    EXPECT_TRUE(torch::equal(masters[i].grad().to(torch::kFloat), reference.parameters()[i].grad().to(torch::kFloat)))
        << i;
  }
  // A second backward (a microbatch) accumulates in fp32.
  const auto first = masters[0].grad().clone();
  loss_of(net, x).backward();
  EXPECT_EQ(fired, 2);
  EXPECT_TRUE(torch::allclose(masters[0].grad(), 2 * first));
  torch::autograd::impl::set_post_acc_grad_hooks(masters[0], nullptr);
  torch::autograd::impl::set_post_acc_grad_hooks(masters[2], nullptr);
}

TEST(MasterWeights, TheReducerAndTheOptimizerStepTheMastersAndTheWeightsFollow) {
  Communicator world = Communicator::world();
  Communicator self = world.split(world.rank(), 0);
  for (const bool buckets : {true, false}) {
    torch::manual_seed(3);
    Net net;
    MasterWeights weights(net, net.parameters(), torch::kBFloat16);
    GradientReducer reducer(weights.masters(), 1.0, self, /*overlap=*/false, nullptr,
                            /*alone_without_buckets=*/!buckets);
    EXPECT_EQ(reducer.bucket_count() > 0, buckets);
    torch::optim::AdamW optimizer(weights.masters(), torch::optim::AdamWOptions(1e-2));
    const auto x = torch::randn({8, 2, 4, 4});
    double first = 0, last = 0;
    for (int step = 0; step < 20; ++step) {
      reducer.zero();
      auto loss = loss_of(net, x);
      loss.backward();
      reducer.finish();
      ASSERT_FALSE(reducer.buckets().empty());
      optimizer.step();
      weights.update_model();
      (step == 0 ? first : last) = loss.item<double>();
    }
    EXPECT_LT(last, 0.5 * first) << "buckets " << buckets;
    const auto parameters = net.parameters();
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      EXPECT_TRUE(torch::equal(parameters[i], weights.masters()[i].to(parameters[i].scalar_type()))) << i;
    }
  }
}

TEST(MasterWeights, ExposedShowsTheMastersAndGivesTheWeightsTheirStorageBack) {
  torch::manual_seed(4);
  Net net;
  MasterWeights weights(net, net.parameters(), torch::kHalf);
  const void* storage = net.fc->weight.data_ptr();
  const auto& master = weights.masters()[2];  // conv weight, conv bias, fc weight
  ASSERT_EQ(master.sizes(), net.fc->weight.sizes());
  {
    MasterWeights::Exposed exposed(&weights, /*write_back=*/false);
    EXPECT_EQ(net.fc->weight.scalar_type(), torch::kFloat);
    EXPECT_EQ(net.fc->weight.data_ptr(), master.data_ptr());
    {
      MasterWeights::Exposed nested(&weights, false);  // a checkpoint written inside another scope
      EXPECT_EQ(net.fc->weight.data_ptr(), master.data_ptr());
    }
    EXPECT_EQ(net.fc->weight.data_ptr(), master.data_ptr());
  }
  EXPECT_EQ(net.fc->weight.scalar_type(), torch::kHalf);
  EXPECT_EQ(net.fc->weight.data_ptr(), storage);
  {
    // A restore writes the parameters in place: it writes the masters, and the weights follow.
    MasterWeights::Exposed exposed(&weights, /*write_back=*/true);
    torch::NoGradGuard no_grad;
    net.fc->weight.fill_(1.0001F);
  }
  EXPECT_FLOAT_EQ(master[0][0].item<float>(), 1.0001F);
  EXPECT_EQ(net.fc->weight.data_ptr(), storage);
  EXPECT_TRUE(torch::equal(net.fc->weight, master.to(torch::kHalf)));
  MasterWeights::Exposed none(nullptr, true);  // precision.params=fp32: nothing
}

TEST(MasterWeights, ExposedFilesTheOptimizerStateUnderTheParametersForCheckpoints) {
  torch::manual_seed(5);
  Net net;
  MasterWeights weights(net, net.parameters(), torch::kBFloat16);
  torch::optim::AdamW optimizer(weights.masters(), torch::optim::AdamWOptions(1e-2));
  loss_of(net, torch::randn({4, 2, 4, 4})).backward();
  optimizer.step();
  const void* master = weights.masters()[2].unsafeGetTensorImpl();
  const void* weight = net.fc->weight.unsafeGetTensorImpl();
  auto& state = optimizer.state();
  ASSERT_EQ(state.size(), weights.masters().size());
  EXPECT_EQ(state.count(const_cast<void*>(master)), 1U);
  {
    MasterWeights::Exposed exposed(&weights, false, &optimizer);
    EXPECT_EQ(state.count(const_cast<void*>(weight)), 1U);  // where a checkpoint looks for it
    EXPECT_EQ(state.count(const_cast<void*>(master)), 0U);
    EXPECT_EQ(state.size(), weights.masters().size());
  }
  EXPECT_EQ(state.count(const_cast<void*>(master)), 1U);
  EXPECT_EQ(state.count(const_cast<void*>(weight)), 0U);
  EXPECT_EQ(state.size(), weights.masters().size());
  // Nested as the trainer nests them: the best checkpoint (with the optimizer, writing nothing
  // back) inside the epoch's scope (without); and both with the optimizer.
  {
    MasterWeights::Exposed epoch(&weights, false);
    {
      MasterWeights::Exposed checkpoint(&weights, false, &optimizer);
      EXPECT_EQ(state.count(const_cast<void*>(weight)), 1U);
      MasterWeights::Exposed again(&weights, true, &optimizer);  // asks to write back
      EXPECT_EQ(state.count(const_cast<void*>(weight)), 1U);
      EXPECT_EQ(state.size(), weights.masters().size());
      torch::NoGradGuard no_grad;
      net.fc->weight.fill_(0.25F);  // a restore's write
    }
    EXPECT_EQ(state.count(const_cast<void*>(master)), 1U);
    EXPECT_EQ(net.fc->weight.scalar_type(), torch::kFloat);  // still the masters
  }
  EXPECT_EQ(state.size(), weights.masters().size());
  EXPECT_EQ(net.fc->weight.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(net.fc->weight, torch::full_like(net.fc->weight, 0.25)));  // written back at the end
}

}  // namespace
}  // namespace hpctrain
