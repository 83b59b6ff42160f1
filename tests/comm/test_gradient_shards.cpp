// parallel.shard: the reducer's reduce-scatter hands each rank the summed chunk of every
// bucket, and gather_parameters() gives every rank every updated chunk. Sizes that do not
// divide by the ranks, buckets smaller than the ranks, channels-last parameters, overlap on
// and off, stages 1 and 2.
#include <gtest/gtest.h>

#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"

using namespace hpctrain;

namespace {

// 15, 1, 7 and 24 (channels-last) elements: with tiny buckets each is its own bucket, so the
// 1-element bucket is smaller than 2 or 4 ranks, and 15 and 7 do not divide by them.
std::vector<torch::Tensor> make_parameters() {
  std::vector<torch::Tensor> p{torch::zeros({3, 5}), torch::zeros({1}), torch::zeros({7}),
                               torch::zeros({2, 3, 2, 2}).contiguous(torch::MemoryFormat::ChannelsLast)};
  for (std::size_t i = 0; i < p.size(); ++i) {
    torch::NoGradGuard no_grad;
    p[i].copy_(torch::arange(p[i].numel(), torch::kFloat).reshape(p[i].sizes()) * 0.5 + static_cast<double>(i));
    p[i].set_requires_grad(true);
  }
  return p;
}

// The coefficient rank `rank` multiplies parameter i by at `step`: its gradient.
torch::Tensor coefficient(const torch::Tensor& p, std::size_t i, int rank, int step) {
  return torch::arange(p.numel(), torch::kFloat).reshape(p.sizes()) * static_cast<double>((rank + 1) * step) +
         static_cast<double>(i);
}

// Backward of sum_i (parameter i * its coefficient) on rank `rank`: each gradient is the coefficient.
void backward_with_coefficients(const std::vector<torch::Tensor>& params, int rank, int step) {
  torch::Tensor loss = torch::zeros({});
  for (std::size_t i = 0; i < params.size(); ++i)
    loss = loss + (params[i] * coefficient(params[i], i, rank, step)).sum();
  loss.backward();
}

// What rank `rank`'s chunk of `shard` should hold: each member parameter's gradient summed over
// `ranks` ranks at `step`, times `times` (microbatches), at its offset; zero in the padding.
torch::Tensor expected_chunk(const ShardBucket& shard, const std::vector<torch::Tensor>& params, int ranks, int rank,
                             int step, double times = 1.0) {
  auto full = torch::zeros({shard.flat.numel()});
  for (const auto& [p, offset] : shard.members) {
    std::size_t i = 0;
    while (params[i].unsafeGetTensorImpl() != p.unsafeGetTensorImpl()) ++i;
    auto sum = torch::zeros(p.sizes());
    for (int r = 0; r < ranks; ++r) sum += coefficient(p, i, r, step) * times;
    full.narrow(0, offset, p.numel()).as_strided(p.sizes(), p.strides()).copy_(sum);
  }
  return full.narrow(0, rank * shard.chunk, shard.chunk);
}

void check_sharded(ShardStage stage, bool overlap, double bucket_mb) {
  Communicator world = Communicator::world();
  const int ranks = world.size();
  auto params = make_parameters();
  std::vector<torch::Tensor> initial;
  for (const auto& p : params) initial.push_back(p.detach().clone());
  GradientReducer reducer(params, bucket_mb, world, overlap, nullptr, false, stage);
  ASSERT_EQ(reducer.sharded(), ranks > 1);
  if (!reducer.sharded()) return;
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::equal(params[i], initial[i])) << "flattening kept parameter " << i;
    EXPECT_EQ(params[i].strides(), initial[i].strides()) << "and its layout";
  }
  std::vector<torch::Tensor> expected = initial;
  for (int step = 1; step <= 3; ++step) {
    reducer.zero();
    backward_with_coefficients(params, world.rank(), step);
    reducer.finish();
    if (stage == ShardStage::Gradients) {
      for (const auto& p : params) EXPECT_FALSE(p.grad().defined()) << "stage 2 keeps no full gradients";
    }
    // Each chunk holds the sum over ranks of its elements; the padding past the parameters is zero.
    for (const ShardBucket& shard : reducer.shard_buckets()) {
      const auto mine = expected_chunk(shard, params, ranks, world.rank(), step);
      EXPECT_TRUE(torch::equal(shard.gradients, mine)) << "step " << step << ", chunk of rank " << world.rank();
      EXPECT_EQ(shard.flat.numel() % ranks, 0);
      torch::NoGradGuard no_grad;
      shard.parameters.sub_(shard.gradients * 0.125);  // the optimizer's step on this rank's chunk
    }
    reducer.gather_parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto sum = torch::zeros(params[i].sizes());
      for (int r = 0; r < ranks; ++r) sum += coefficient(params[i], i, r, step);
      expected[i] = expected[i] - sum * 0.125;
      EXPECT_TRUE(torch::allclose(params[i], expected[i], 1e-6, 1e-6)) << "step " << step << ", parameter " << i;
    }
  }
  const ReducerMemory memory = reducer.memory();
  std::int64_t chunks = 0, flat = 0;
  for (const ShardBucket& shard : reducer.shard_buckets()) {
    chunks += shard.chunk * 4;
    flat += shard.flat.numel() * 4;
  }
  EXPECT_EQ(memory.parameters, flat);
  if (stage == ShardStage::Gradients) {
    EXPECT_EQ(memory.gradients, chunks) << "between steps only the chunks";
    EXPECT_GT(memory.bucket_peak, 0);
  } else {
    EXPECT_EQ(memory.gradients, chunks + flat) << "stage 1 keeps the full buckets too";
  }
  EXPECT_GT(reducer.times().bytes, 0);
}

}  // namespace

TEST(GradientShards, OptimizerStageOneBucketPerParameterOverlapped) {
  check_sharded(ShardStage::Optimizer, true, 1e-6);
}
TEST(GradientShards, OptimizerStageOneBucketBlocking) {
  check_sharded(ShardStage::Optimizer, false, 25.0);
}
TEST(GradientShards, GradientStageOneBucketPerParameterOverlapped) {
  check_sharded(ShardStage::Gradients, true, 1e-6);
}
TEST(GradientShards, GradientStageOneBucketBlocking) {
  check_sharded(ShardStage::Gradients, false, 25.0);
}

// Microbatches: gradients accumulate over held backwards before the chunks are reduced.
TEST(GradientShards, GradientStageAccumulatesHeldMicrobatches) {
  Communicator world = Communicator::world();
  auto params = make_parameters();
  GradientReducer reducer(params, 1e-6, world, true, nullptr, false, ShardStage::Gradients);
  if (!reducer.sharded()) return;
  reducer.zero();
  reducer.hold();
  for (int k = 0; k < 3; ++k) {
    if (k == 2) reducer.release(params);
    backward_with_coefficients(params, world.rank(), 1);
  }
  reducer.finish();
  for (const ShardBucket& shard : reducer.shard_buckets()) {
    EXPECT_TRUE(torch::equal(shard.gradients, expected_chunk(shard, params, world.size(), world.rank(), 1, 3.0)));
  }
}

// Clipping sums the chunks' squares over the ranks: every rank scales by the same factor.
TEST(GradientShards, ClipUsesTheGlobalNorm) {
  Communicator world = Communicator::world();
  auto params = make_parameters();
  GradientReducer reducer(params, 1e-6, world, false, nullptr, false, ShardStage::Optimizer);
  if (!reducer.sharded()) return;
  reducer.zero();
  backward_with_coefficients(params, world.rank(), 1);
  reducer.finish();
  double squares = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto sum = torch::zeros(params[i].sizes(), torch::kDouble);
    for (int r = 0; r < world.size(); ++r) sum += coefficient(params[i], i, r, 1).to(torch::kDouble);
    squares += sum.square().sum().item<double>();
  }
  std::vector<torch::Tensor> before;
  for (const auto& g : reducer.buckets()) before.push_back(g.clone());
  reducer.clip_to_norm(1.0);
  const double factor = 1.0 / (std::sqrt(squares) + 1e-6);
  for (std::size_t b = 0; b < before.size(); ++b) {
    EXPECT_TRUE(torch::allclose(reducer.buckets()[b], before[b] * factor, 1e-5, 1e-7)) << "bucket " << b;
  }
}
