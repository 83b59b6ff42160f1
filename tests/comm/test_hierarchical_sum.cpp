// comm/HierarchicalSum on real ranks, with nodes pretended by a color (consecutive pairs of
// ranks) and with the real topology (one node here): integer-valued sums equal a flat
// MPI_Allreduce exactly, blocking and non-blocking; float sums agree within rounding; the
// node count and comm.hierarchical's auto rule. comm/RingSum (the overlapped path's sum):
// exact integer sums for counts below, at and above the rank count, every rank's float sums
// bitwise equal, and the rule that picks it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "comm/HierarchicalSum.hpp"
#include "comm/RingSum.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

namespace {

std::vector<float> pattern(int rank, std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>((rank + 1) * static_cast<int>(i % 13) - 5);
  return v;
}

}  // namespace

TEST(HierarchicalSum, IntegerSumsEqualTheFlatAllreduceExactly) {
  const Communicator world = Communicator::world();
  for (int pretend : {0, 1}) {
    // Pairs of consecutive ranks as nodes, or the real topology.
    const HierarchicalSum hier(world, pretend != 0 ? world.rank() / 2 : -1);
    if (pretend != 0) {
      EXPECT_EQ(hier.nodes(), (world.size() + 1) / 2);
    }
    for (std::size_t n : {std::size_t(1), std::size_t(1000), std::size_t(1) << 18}) {
      auto flat = pattern(world.rank(), n);
      world.allreduce_sum(flat.data(), n);
      auto blocking = pattern(world.rank(), n);
      hier.sum(blocking.data(), n);
      EXPECT_EQ(blocking, flat) << n << " values";
      auto overlapped = pattern(world.rank(), n);
      auto op = hier.start(overlapped.data(), n);
      while (!op.test()) {
      }
      EXPECT_EQ(overlapped, flat) << n << " values, non-blocking";
    }
  }
}

TEST(RingSum, IntegerSumsEqualTheFlatAllreduceForEveryCount) {
  const Communicator world = Communicator::world();
  std::vector<float> scratch;  // grown by the first sum that needs more, reused after
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(4), std::size_t(1001),
                        (std::size_t(1) << 18) + 7}) {
    auto flat = pattern(world.rank(), n);
    world.allreduce_sum(flat.data(), n);
    auto ring = pattern(world.rank(), n);
    RingSum(world, ring.data(), n, scratch).wait();
    EXPECT_EQ(ring, flat) << n << " values";
  }
}

TEST(RingSum, ItsHalvesMakeTheWhole) {
  const Communicator world = Communicator::world();
  std::vector<float> scratch;
  for (std::size_t n : {std::size_t(3), std::size_t(4099)}) {
    auto whole = pattern(world.rank(), n), halves = whole;
    RingSum(world, whole.data(), n, scratch).wait();
    RingSum(world, halves.data(), n, scratch, RingPart::ReduceScatter).wait();
    const RingSum::Span mine = RingSum::owned_chunk(n, world.rank(), world.size());
    for (std::size_t i = mine.first; i < mine.first + mine.count; ++i) EXPECT_EQ(halves[i], whole[i]) << i;
    RingSum(world, halves.data(), n, scratch, RingPart::AllGather).wait();
    EXPECT_EQ(halves, whole) << n << " values";
  }
}

TEST(RingSum, EveryRankHoldsTheSameBits) {
  const Communicator world = Communicator::world();
  std::vector<float> mine(999);
  for (std::size_t i = 0; i < mine.size(); ++i)
    mine[i] = std::sin(0.37f * static_cast<float>(i + 1) * static_cast<float>(world.rank() + 1));
  std::vector<float> flat = mine;
  world.allreduce_sum(flat.data(), flat.size());
  std::vector<float> scratch;
  RingSum sum(world, mine.data(), mine.size(), scratch);
  while (!sum.test()) {
  }
  std::vector<float> first = mine;
  world.broadcast(first.data(), first.size() * sizeof(float), 0);
  EXPECT_EQ(mine, first);
  for (std::size_t i = 0; i < flat.size(); ++i) EXPECT_NEAR(mine[i], flat[i], 1e-5f * (1.0f + std::fabs(flat[i])));
}

TEST(RingSum, PaysFromThirtyTwoKibibytesPerMessage) {
  EXPECT_FALSE(ring_pays_for(std::int64_t{1} << 30, 1));
  EXPECT_TRUE(ring_pays_for(64 * 1024, 2));
  EXPECT_FALSE(ring_pays_for(64 * 1024 - 4, 2));
  EXPECT_TRUE(ring_pays_for(std::int64_t{32} * 1024 * 64, 64));
}

TEST(HierarchicalSum, FloatSumsAgreeWithinRoundingAndEveryRankHoldsTheSameBits) {
  const Communicator world = Communicator::world();
  const HierarchicalSum hier(world, world.rank() / 2);
  // 4096 values: the leaders' path in flight; 1 << 17: the 2-D ring on equal nodes.
  for (std::size_t n : {std::size_t(4096), std::size_t(1) << 17}) {
    std::vector<float> flat(n), blocking(n), overlapped(n);
    for (std::size_t i = 0; i < n; ++i)
      flat[i] = blocking[i] = overlapped[i] = std::sin(0.37f * static_cast<float>(i + 1) * (world.rank() + 1));
    world.allreduce_sum(flat.data(), n);
    hier.sum(blocking.data(), n);
    auto op = hier.start(overlapped.data(), n);
    while (!op.test()) {
    }
    std::vector<float> first = overlapped;
    world.broadcast(first.data(), n * sizeof(float), 0);
    EXPECT_EQ(overlapped, first) << n << " values";
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(blocking[i], flat[i], 1e-5f * (1.0f + std::fabs(flat[i])));
      EXPECT_NEAR(overlapped[i], flat[i], 1e-5f * (1.0f + std::fabs(flat[i])));
    }
  }
}

TEST(HierarchicalSum, AutoTurnsOnOnlyAcrossNodesWithSeveralRanksOnOne) {
  const Communicator world = Communicator::world();
  const HierarchicalSum pairs(world, world.rank() / 2);
  // Pairs are worthwhile from 3 ranks on (2 nodes, one with 2 ranks); one rank per node is not.
  EXPECT_EQ(pairs.worthwhile(), world.size() >= 3);
  const HierarchicalSum singles(world, world.rank());
  EXPECT_FALSE(singles.worthwhile());
  // One rank per node: every rank leads, and the leaders' sum is the whole sum (a ring).
  auto flat = pattern(world.rank(), 1 << 16), mine = flat;
  world.allreduce_sum(flat.data(), flat.size());
  auto op = singles.start(mine.data(), mine.size());
  while (!op.test()) {
  }
  EXPECT_EQ(mine, flat);
  // The real topology here is one node: auto leaves the flat allreduce.
  EXPECT_EQ(make_hierarchical_sum(world, "auto"), nullptr);
  EXPECT_EQ(make_hierarchical_sum(world, "off"), nullptr);
  EXPECT_EQ(make_hierarchical_sum(world, "on") != nullptr, world.size() > 1);
  EXPECT_THROW(make_hierarchical_sum(world, "sometimes"), ConfigError);
}
