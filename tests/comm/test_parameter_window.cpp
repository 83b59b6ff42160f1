// parallel.shard=parameters (ZeRO stage 3): between uses a rank holds its parameter chunks
// only; a group's buckets are gathered whole on demand, freed after, and what autograd saved
// from a parameter reads the regathered values. On 1, 2 and 4 ranks.
#include <gtest/gtest.h>

#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "comm/ParameterWindow.hpp"

using namespace hpctrain;

namespace {

// Two groups (pieces) of two parameters each, sizes that do not divide by 2 or 4.
struct Fixture {
  std::vector<torch::Tensor> params{torch::zeros({3, 5}), torch::zeros({7}), torch::zeros({2, 3}), torch::zeros({1})};
  std::vector<std::int64_t> groups{0, 0, 1, 1};
  std::vector<torch::Tensor> initial;
  Fixture() {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      params[i].copy_(torch::arange(params[i].numel(), torch::kFloat).reshape(params[i].sizes()) * 0.25 +
                      static_cast<double>(i));
      params[i].set_requires_grad(true);
      initial.push_back(params[i].detach().clone());
    }
  }
};

std::size_t storage_bytes(const torch::Tensor& t) {
  return t.storage().nbytes();
}

// Sum over i of coefficient_i * p_i^2 with coefficient_i = rank + 1 + i: autograd saves each p_i.
torch::Tensor squares_loss(const std::vector<torch::Tensor>& params, int rank) {
  torch::Tensor loss = torch::zeros({});
  for (std::size_t i = 0; i < params.size(); ++i) {
    loss = loss + (params[i] * params[i]).sum() * static_cast<double>(rank + 1 + static_cast<int>(i));
  }
  return loss;
}

void check_window(bool overlap) {
  Communicator world = Communicator::world();
  const int ranks = world.size();
  Fixture f;
  GradientReducer reducer(f.params, 25.0, world, overlap, nullptr, false, ShardStage::Parameters, f.groups);
  if (ranks == 1) {
    EXPECT_EQ(reducer.window(), nullptr) << "one rank: nothing to shard";
    return;
  }
  ParameterWindow& window = *reducer.window();
  ASSERT_EQ(reducer.shard_buckets().size(), 2U) << "one bucket per group, never spanning two";
  EXPECT_GT(window.gathered_bytes(), 0) << "whole as built, until freed";
  window.free_gathered();
  EXPECT_EQ(window.gathered_bytes(), 0);
  for (const auto& p : f.params) EXPECT_EQ(storage_bytes(p), 0U) << "only the chunks are held";

  // Forward gathers; the saved tensors see the regathered values in backward.
  reducer.zero();
  window.gather(0);
  window.gather(1);
  for (std::size_t i = 0; i < f.params.size(); ++i) EXPECT_TRUE(torch::equal(f.params[i], f.initial[i]));
  auto loss = squares_loss(f.params, world.rank());
  window.free(0);
  window.free(1);
  EXPECT_EQ(window.gathered_bytes(), 0);
  window.gather(1);
  window.gather(0);
  loss.backward();
  reducer.finish();
  EXPECT_EQ(window.gathered_bytes(), 0) << "each bucket freed once its gradients arrived";

  // Each rank's gradient chunk: sum over ranks of 2 (r + 1 + i) p_i, at the parameter's offset.
  for (const ShardBucket& shard : reducer.shard_buckets()) {
    auto full = torch::zeros({shard.flat.numel()});
    for (const auto& [p, offset] : shard.members) {
      std::size_t i = 0;
      while (f.params[i].unsafeGetTensorImpl() != p.unsafeGetTensorImpl()) ++i;
      double c = 0;
      for (int r = 0; r < ranks; ++r) c += 2.0 * (r + 1 + static_cast<int>(i));
      full.narrow(0, offset, p.numel()).copy_(f.initial[i].reshape({-1}) * c);
    }
    EXPECT_TRUE(torch::allclose(shard.gradients, full.narrow(0, shard.offset, shard.chunk), 1e-6, 1e-6));
    torch::NoGradGuard no_grad;
    shard.parameters.sub_(shard.gradients * 0.01);  // the optimizer steps the chunk
  }
  reducer.gather_parameters();
  {
    WholeParameters whole(&window, /*write_back=*/false);
    for (std::size_t i = 0; i < f.params.size(); ++i) {
      double c = 0;
      for (int r = 0; r < ranks; ++r) c += 2.0 * (r + 1 + static_cast<int>(i));
      EXPECT_TRUE(torch::allclose(f.params[i], f.initial[i] * (1.0 - 0.01 * c), 1e-6, 1e-6)) << "parameter " << i;
    }
  }
  EXPECT_EQ(window.gathered_bytes(), 0);
  EXPECT_GT(window.peak_bytes(), 0);
  const ReducerMemory held = reducer.memory();
  std::int64_t chunks = 0;
  for (const ShardBucket& shard : reducer.shard_buckets()) chunks += shard.chunk * 4;
  EXPECT_EQ(held.parameters, chunks);
  EXPECT_EQ(held.gradients, chunks);
}

}  // namespace

TEST(ParameterWindow, GatherFreeAndBackwardOverlapped) {
  check_window(true);
}
TEST(ParameterWindow, GatherFreeAndBackwardBlocking) {
  check_window(false);
}

// What is written into whole parameters becomes the chunks (a resume, a broadcast).
TEST(ParameterWindow, WriteBackKeepsWhatWasWritten) {
  Communicator world = Communicator::world();
  Fixture f;
  GradientReducer reducer(f.params, 1e-6, world, true, nullptr, false, ShardStage::Parameters, f.groups);
  if (reducer.window() == nullptr) return;
  {
    WholeParameters whole(reducer.window(), /*write_back=*/true);
    {
      WholeParameters nested(reducer.window(), /*write_back=*/false);  // nests: frees nothing
    }
    torch::NoGradGuard no_grad;
    for (auto& p : f.params) p.fill_(3.5);
  }
  EXPECT_EQ(reducer.window()->gathered_bytes(), 0);
  reducer.window()->gather(1);
  EXPECT_TRUE(torch::equal(f.params[2], torch::full({2, 3}, 3.5)));
  EXPECT_EQ(storage_bytes(f.params[0]), 0U) << "group 0 stays freed";
  reducer.window()->prefetch(0);
  reducer.window()->free(0);  // waits for the prefetch
  reducer.gather_parameters();
  EXPECT_EQ(reducer.window()->gathered_bytes(), 0);
}
