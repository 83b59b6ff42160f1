#include <gtest/gtest.h>

#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "util/Random.hpp"

#include <chrono>
#include <cmath>
#include <thread>

using namespace hpctrain;

namespace {

// L2 norm over the reducer's gradients.
double norm_of(const GradientReducer& reducer) {
  double squares = 0;
  for (const auto& g : reducer.buckets()) squares += g.to(torch::kDouble).square().sum().item<double>();
  return std::sqrt(squares);
}

std::vector<torch::Tensor> make_parameters() {
  // Sizes in floats: 1000, 10, 5000, 3 -> with 0.02 MiB buckets (5242 floats) several buckets.
  return {torch::zeros({10, 100}, torch::requires_grad()), torch::zeros({10}, torch::requires_grad()),
          torch::zeros({50, 100}, torch::requires_grad()), torch::zeros({3}, torch::requires_grad())};
}

}  // namespace

TEST(GradientReducer, SplitsInReverseOrderWithinTheSizeLimit) {
  Communicator world = Communicator::world();
  auto params = make_parameters();
  GradientReducer buckets(params, 0.02, world, true);  // 20971 bytes = 5242 floats
  EXPECT_EQ(buckets.element_count(), 1000 + 10 + 5000 + 3);
  // Reverse registration order: 3 + 5000 + 10 fit in the first bucket; 1000 more would not.
  ASSERT_EQ(buckets.bucket_count(), 2u);
  EXPECT_EQ(buckets.buckets()[0].numel(), 3 + 5000 + 10);
  EXPECT_EQ(buckets.buckets()[1].numel(), 1000);
  // The last parameter's gradient is the first bucket's first elements.
  EXPECT_EQ(params[3].grad().data_ptr<float>(), buckets.buckets()[0].data_ptr<float>());
}

TEST(GradientReducer, GradientsAreViewsIntoTheBuckets) {
  Communicator world = Communicator::world();
  Communicator self = world.split(world.rank(), 0);
  auto params = make_parameters();
  GradientReducer buckets(params, 25.0, self, true);
  ASSERT_EQ(buckets.bucket_count(), 1u);
  auto loss = (params[0].sum() * 2 + params[2].sum() * 3);
  loss.backward();
  // Backward accumulated in place: the bucket holds the gradients.
  EXPECT_FLOAT_EQ(buckets.buckets()[0].sum().item<float>(), 2.0f * 1000 + 3.0f * 5000);
  buckets.zero();
  EXPECT_FLOAT_EQ(params[0].grad().abs().sum().item<float>(), 0.0f);
}

// Each rank holds a different number of samples of the global batch; the loss is the
// local sum divided by the global batch, so the summed gradient is the global mean. Run
// over several steps, with and without overlap, and several bucket sizes.
void check_global_mean(bool overlap, double bucket_mb) {
  Communicator world = Communicator::world();
  auto params = make_parameters();
  GradientReducer reducer(params, bucket_mb, world, overlap);
  const int p = world.size();
  const std::int64_t global = p * (p + 1) / 2;
  const double local_samples = world.rank() + 1;
  for (int step = 1; step <= 3; ++step) {
    reducer.zero();
    auto loss = params[0].sum() * (10.0 * step * (world.rank() + 1)) * (local_samples / static_cast<double>(global)) +
                (params[3] * params[3]).sum() + params[3].sum() * (local_samples / static_cast<double>(global)) +
                params[1].sum() * 0.5;
    loss.backward();
    reducer.finish();
    double expected = 0;
    for (int r = 0; r < p; ++r) expected += 10.0 * step * (r + 1) * (r + 1) / static_cast<double>(global);
    EXPECT_NEAR(params[0].grad()[0][0].item<double>(), expected, 1e-3) << "step " << step;
    EXPECT_NEAR(params[3].grad()[0].item<double>(), 1.0, 1e-5);  // params[3] is zero: d(x^2) = 0
    EXPECT_NEAR(params[1].grad()[4].item<double>(), 0.5 * p, 1e-6);
    EXPECT_NEAR(params[2].grad().abs().sum().item<double>(), 0.0, 1e-9);  // unused this step
  }
  const ReducerTimes t = reducer.times();
  if (p > 1) {
    EXPECT_GT(t.bytes, 0);
    EXPECT_GE(t.total_seconds, 0.0);
  }
}

TEST(GradientReducer, OverlappedReductionGivesTheGlobalMean) {
  check_global_mean(true, 0.02);
}
TEST(GradientReducer, OverlappedWithTinyBucketsGivesTheGlobalMean) {
  check_global_mean(true, 0.001);
}
TEST(GradientReducer, BlockingReductionGivesTheGlobalMean) {
  check_global_mean(false, 0.02);
}

TEST(GradientReducer, AveragedBuffersAreIdenticalOnEveryRank) {
  Communicator world = Communicator::world();
  torch::nn::BatchNorm1d bn(3);
  {
    torch::NoGradGuard g;
    bn->running_mean.fill_(static_cast<float>(world.rank()));
  }
  average_module_buffers(*bn, world);
  EXPECT_FLOAT_EQ(bn->running_mean[1].item<float>(), (world.size() - 1) / 2.0f);
}

TEST(GradientReducer, BroadcastMakesEveryRankHoldRootsParameters) {
  Communicator world = Communicator::world();
  torch::nn::Linear root_model(4, 3);
  torch::nn::BatchNorm1d bn(3);
  {
    torch::NoGradGuard g;
    root_model->weight.fill_(static_cast<float>(world.rank() + 1));
    bn->running_mean.fill_(static_cast<float>(world.rank() + 5));
  }
  broadcast_module_state(*root_model, world, 0);
  broadcast_module_state(*bn, world, 0);
  EXPECT_FLOAT_EQ(root_model->weight.sum().item<float>(), 12.0f);
  EXPECT_FLOAT_EQ(bn->running_mean[0].item<float>(), 5.0f);
}

// Ranks reaching finish() at different moments must still make the same MPI call for each
// bucket (mixing blocking and non-blocking collectives deadlocks). A hang here ends in the
// CTest timeout.
TEST(GradientReducer, RanksWithDifferentTimingNeverDeadlock) {
  Communicator world = Communicator::world();
  auto params = make_parameters();
  GradientReducer reducer(params, 0.004, world, true);
  SplitMix64 jitter(static_cast<std::uint64_t>(world.rank()) + 1);
  for (int step = 0; step < 60; ++step) {
    reducer.zero();
    auto loss = params[0].sum() + params[1].sum() + params[2].sum() + params[3].sum();
    loss.backward();
    if ((world.rank() + step) % 2 == 0) std::this_thread::sleep_for(std::chrono::microseconds(jitter.below(3000)));
    reducer.finish();
    EXPECT_FLOAT_EQ(params[2].grad()[7][3].item<float>(), static_cast<float>(world.size()));
  }
}

TEST(GradientReducer, ChannelsLastParametersKeepTheirLayoutInTheBucket) {
  Communicator world = Communicator::world();
  auto w = torch::randn({4, 3, 2, 2}).contiguous(torch::MemoryFormat::ChannelsLast).requires_grad_();
  GradientReducer reducer({w}, 25.0, world, true);
  EXPECT_TRUE(w.grad().is_contiguous(torch::MemoryFormat::ChannelsLast));
  (w * torch::arange(48).view({4, 3, 2, 2})).sum().backward();
  reducer.finish();
  EXPECT_EQ(w.grad().data_ptr<float>(), reducer.buckets()[0].data_ptr<float>());
  EXPECT_FLOAT_EQ(w.grad()[1][2][0][1].item<float>(), static_cast<float>(world.size() * (12 + 8 + 1)));
}

// One rank in training: no buckets; autograd's own gradient buffers are what the scaler,
// the clipping and the optimizer see, dropped again by zero().
TEST(GradientReducer, AloneKeepsNoBucketsAndHandsOverAutogradsGradients) {
  Communicator world = Communicator::world();
  Communicator self = world.split(world.rank(), 0);
  auto params = make_parameters();
  GradientReducer alone(params, 25.0, self, true, nullptr, /*alone_without_buckets=*/true);
  EXPECT_EQ(alone.bucket_count(), 0u);
  EXPECT_EQ(alone.element_count(), 1000 + 10 + 5000 + 3);
  EXPECT_TRUE(alone.buckets().empty());
  for (int step = 0; step < 2; ++step) {
    alone.zero();
    for (const auto& p : params) EXPECT_FALSE(p.grad().defined());
    // Only the first two parameters take part: the others keep no gradient.
    ((params[0] * 2.0).sum() + (params[1] * 3.0).sum()).backward();
    alone.finish();
    ASSERT_EQ(alone.buckets().size(), 2u);
    EXPECT_TRUE(alone.buckets()[0].equal(torch::full({10, 100}, 2.0f)));  // not accumulated over steps
    EXPECT_TRUE(alone.buckets()[1].equal(torch::full({10}, 3.0f)));
    EXPECT_NEAR(norm_of(alone), std::sqrt(1000 * 4.0 + 10 * 9.0), 1e-3);
    for (const auto& g : alone.buckets()) g.mul_(0.5);
    EXPECT_FLOAT_EQ(params[1].grad()[0].item<float>(), 1.5f);
  }
  // Several ranks: the flag changes nothing, the buckets are there.
  if (world.size() > 1) {
    GradientReducer shared(params, 25.0, world, true, nullptr, /*alone_without_buckets=*/true);
    EXPECT_EQ(shared.bucket_count(), 1u);
  }
}

// Clipping on the gradients' device: the global-norm rule without reading the norm on the
// host, with buckets (several ranks) and without (one rank).
TEST(GradientReducer, ClipToNormScalesOnlyAboveTheBound) {
  Communicator world = Communicator::world();
  auto params = make_parameters();
  GradientReducer reducer(params, 0.02, world, false, nullptr, /*alone_without_buckets=*/true);
  auto step = [&] {
    reducer.zero();
    ((params[0] * 2.0).sum() + (params[2] * -1.0).sum() + (params[3] * 4.0).sum()).backward();
    reducer.finish();
  };
  // Summed over the ranks: each gradient is the same on every rank times the rank count.
  const double n = world.size();
  const double norm = n * std::sqrt(1000 * 4.0 + 5000 * 1.0 + 3 * 16.0);
  step();
  EXPECT_NEAR(norm_of(reducer), norm, 1e-3 * norm);
  reducer.clip_to_norm(norm * 2);  // within the bound: untouched, bit for bit
  EXPECT_TRUE(params[0].grad().equal(torch::full({10, 100}, 2.0f * static_cast<float>(n))));
  reducer.clip_to_norm(5.0);
  EXPECT_NEAR(norm_of(reducer), 5.0, 1e-4);
  EXPECT_NEAR(params[3].grad()[0].item<double>(), 4.0 * n * 5.0 / (norm + 1e-6), 1e-5);
  EXPECT_FALSE(params[1].grad().defined() && params[1].grad().abs().sum().item<float>() != 0.0f);
}
