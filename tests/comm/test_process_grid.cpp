#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "comm/ProcessGrid.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

TEST(GridLayout, EveryRankHasOnePlaceInEitherOrder) {
  for (auto order : {GridOrder::ReplicasInner, GridOrder::StagesInner}) {
    for (int ranks : {1, 2, 4, 6, 8, 12}) {
      for (int stages = 1; stages <= ranks; ++stages) {
        if (ranks % stages != 0) continue;
        const GridLayout g = GridLayout::of(ranks, stages, order);
        std::set<int> seen;
        for (int s = 0; s < g.stages; ++s) {
          for (int r = 0; r < g.replicas; ++r) {
            const int rank = g.rank_of(s, r);
            EXPECT_EQ(g.stage_of(rank), s);
            EXPECT_EQ(g.replica_of(rank), r);
            seen.insert(rank);
          }
        }
        EXPECT_EQ(static_cast<int>(seen.size()), ranks);
        EXPECT_EQ(*seen.begin(), 0);
        EXPECT_EQ(*seen.rbegin(), ranks - 1);
      }
    }
  }
}

TEST(GridLayout, ReplicasInnerKeepsAStagesReplicasConsecutive) {
  // 2 stages x 4 replicas on 2 nodes of 4 ranks: each node holds one stage's replicas.
  const GridLayout g = GridLayout::of(8, 2, GridOrder::ReplicasInner);
  EXPECT_EQ(g.replicas, 4);
  EXPECT_EQ((std::vector<int>{g.rank_of(0, 0), g.rank_of(0, 3), g.rank_of(1, 0), g.rank_of(1, 3)}),
            (std::vector<int>{0, 3, 4, 7}));
  const GridLayout t = GridLayout::of(8, 2, GridOrder::StagesInner);
  EXPECT_EQ((std::vector<int>{t.rank_of(0, 0), t.rank_of(1, 0), t.rank_of(0, 1), t.rank_of(1, 3)}),
            (std::vector<int>{0, 1, 2, 7}));
  EXPECT_EQ(g.describe(), "2 stages x 4 replicas (replicas_inner)");
}

TEST(GridLayout, StagesThatDoNotDivideTheRanksNameTheKey) {
  try {
    GridLayout::of(6, 4, GridOrder::ReplicasInner, "cv.ranks_per_group");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("parallel.pipeline_stages: 4 stages do not divide cv.ranks_per_group (6)"),
              std::string::npos)
        << message;
  }
  EXPECT_THROW(parse_grid_order("diagonal"), ConfigError);
}

TEST(ProcessGrid, AxesConnectTheRightRanks) {
  Communicator world = Communicator::world();
  for (auto order : {GridOrder::ReplicasInner, GridOrder::StagesInner}) {
    for (int stages = 1; stages <= world.size(); ++stages) {
      if (world.size() % stages != 0) continue;
      ProcessGrid grid(world, stages, order);
      EXPECT_EQ(grid.pipeline().size(), stages);
      EXPECT_EQ(grid.data().size(), world.size() / stages);
      EXPECT_EQ(grid.pipeline().rank(), grid.stage());
      EXPECT_EQ(grid.data().rank(), grid.replica());
      // The pipeline axis holds one rank per stage of this replica: summing world ranks
      // over it gives the sum of rank_of(s, replica).
      std::int64_t sum = world.rank();
      grid.pipeline().allreduce_sum(&sum, 1);
      std::int64_t want = 0;
      for (int s = 0; s < stages; ++s) want += grid.layout().rank_of(s, grid.replica());
      EXPECT_EQ(sum, want);
      sum = world.rank();
      grid.data().allreduce_sum(&sum, 1);
      want = 0;
      for (int r = 0; r < grid.replicas(); ++r) want += grid.layout().rank_of(grid.stage(), r);
      EXPECT_EQ(sum, want);
    }
  }
}

TEST(ProcessGrid, PointToPointAlongThePipelineArrivesInOrder) {
  Communicator world = Communicator::world();
  if (world.size() < 2) GTEST_SKIP() << "needs two ranks";
  ProcessGrid grid(world, world.size(), GridOrder::ReplicasInner);
  const Communicator& pipe = grid.pipeline();
  // Each stage sends three messages forward; the next one receives them in order.
  std::vector<std::vector<float>> out(3), in(3, std::vector<float>(4));
  std::vector<Request> sends, recvs;
  if (!grid.first_stage()) {
    for (int k = 0; k < 3; ++k) recvs.push_back(pipe.irecv(in[k].data(), 16, grid.stage() - 1, 7));
  }
  if (!grid.last_stage()) {
    for (int k = 0; k < 3; ++k) {
      out[k] = std::vector<float>(4, static_cast<float>(grid.stage() * 10 + k));
      sends.push_back(pipe.isend(out[k].data(), 16, grid.stage() + 1, 7));
    }
  }
  for (auto& r : recvs) r.wait();
  for (auto& s : sends) s.wait();
  if (!grid.first_stage()) {
    for (int k = 0; k < 3; ++k) EXPECT_EQ(in[k][3], static_cast<float>((grid.stage() - 1) * 10 + k));
  }
}
