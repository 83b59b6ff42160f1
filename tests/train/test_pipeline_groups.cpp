#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "pipeline_shapes.hpp"
#include "train/PipelineGroups.hpp"

using namespace hpctrain;
using hpctrain::testing::for_each_shape;

namespace {

using Table = std::vector<std::vector<PipeAction>>;

Table nccl_table(ScheduleKind kind, const PipelineShape& shape) {
  Table table = pipeline_table(kind, shape);
  for (int s = 0; s < shape.stages; ++s) table[s] = nccl_order(kind, shape, s, table[s]);
  return table;
}

bool same_actions(std::vector<PipeAction> a, std::vector<PipeAction> b) {
  auto key = [](const PipeAction& x) { return std::make_tuple(static_cast<int>(x.op), x.microbatch, x.chunk); };
  auto less = [&](const PipeAction& x, const PipeAction& y) { return key(x) < key(y); };
  std::sort(a.begin(), a.end(), less);
  std::sort(b.begin(), b.end(), less);
  return a == b;
}

}  // namespace

// Every shape the schedules support (tests/train/pipeline_shapes.hpp): issued as NCCL groups, the messages pair without
// tags and no rank waits forever; the reordered lists still respect every dependency (the MPI simulation finishes) and
// hold the same actions. Forward-only lists (evaluation) as well.
TEST(PipelineGroups, EveryScheduleGroupsPairAndFinishOverNccl) {
  for_each_shape([](ScheduleKind kind, const PipelineShape& shape) {
    const int p = shape.stages;
    const Table table = nccl_table(kind, shape);
    EXPECT_EQ(check_groups(table, shape), "");
    const Simulation sim = simulate(table, shape);
    EXPECT_TRUE(sim.finished) << sim.problem;
    for (int s = 0; s < p; ++s) EXPECT_TRUE(same_actions(table[s], pipeline_actions(kind, shape, s)));
    Table forward;
    for (int s = 0; s < p; ++s) forward.push_back(forward_actions(shape, s));
    EXPECT_EQ(check_groups(forward, shape), "");
  });
}

TEST(PipelineGroups, OnlyInterleavedIsReorderedAndOnlyInItsSteadyState) {
  const PipelineShape one{4, 8, 1};
  for (ScheduleKind kind : {ScheduleKind::GPipe, ScheduleKind::OneFOneB}) {
    for (int s = 0; s < 4; ++s)
      EXPECT_EQ(nccl_order(kind, one, s, pipeline_actions(kind, one, s)), pipeline_actions(kind, one, s));
  }
  // p = 4, m = 4, v = 2: ranks 0 and 1 run all 8 forwards first and keep their lists.
  const PipelineShape shape{4, 4, 2};
  const auto kind = ScheduleKind::Interleaved;
  EXPECT_EQ(nccl_order(kind, shape, 0, pipeline_actions(kind, shape, 0)), pipeline_actions(kind, shape, 0));
  // Rank 1 of 2, m = 4, v = 2, steady state: the forward's send waits for the backward after
  // it, whose gradient receive comes before the forward, so the four messages of a pair go
  // out in one group.
  const PipelineShape two{2, 4, 2};
  const std::string order = format_actions(nccl_order(kind, two, 1, pipeline_actions(kind, two, 1)));
  EXPECT_NE(order.find("RA2.0 RG0.0 F2.0 B0.0 SA2.0 SG0.0 RA3.0 RG1.0 F3.0 B1.0 SA3.0"), std::string::npos) << order;
  EXPECT_NE(order, format_actions(pipeline_actions(kind, two, 1)));
}

// The check can fail: interleaved in its MPI order deadlocks or crosses over NCCL (a
// gradient and an activation between the same two ranks, in different orders on each).
TEST(PipelineGroups, InterleavedInItsMpiOrderFailsOverNccl) {
  const PipelineShape shape{2, 4, 2};
  const std::string problem = check_groups(pipeline_table(ScheduleKind::Interleaved, shape), shape);
  EXPECT_FALSE(problem.empty());
}

TEST(PipelineGroups, MessagesInAnotherOrderOnTheReceiverAreReportedAsCrossing) {
  const PipelineShape shape{2, 2, 1};
  Table table = pipeline_table(ScheduleKind::GPipe, shape);
  // Rank 1 receives microbatch 1's activation first: with MPI tags that would still pair,
  // over NCCL the first send (microbatch 0) meets the first receive.
  auto& r1 = table[1];
  const auto a = std::find(r1.begin(), r1.end(), PipeAction{PipeOp::RecvActivation, 0, 0});
  const auto b = std::find(r1.begin(), r1.end(), PipeAction{PipeOp::RecvActivation, 1, 0});
  ASSERT_TRUE(a != r1.end() && b != r1.end());
  std::iter_swap(a, b);
  const std::string problem = check_groups(table, shape);
  EXPECT_NE(problem.find("rank 0's send 0 to rank 1 is the activation of microbatch 0"), std::string::npos) << problem;
}

TEST(PipelineGroups, RunsAreTheMaximalStretchesOfMessages) {
  const std::vector<PipeAction> actions{{PipeOp::Forward, 0, 0},      {PipeOp::SendActivation, 0, 0},
                                        {PipeOp::RecvGradient, 1, 0}, {PipeOp::Backward, 1, 0},
                                        {PipeOp::SendGradient, 1, 0}, {PipeOp::RecvActivation, 2, 0},
                                        {PipeOp::Forward, 2, 0}};
  const auto runs = message_runs(actions);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].begin, 1u);
  EXPECT_EQ(runs[0].end, 3u);
  EXPECT_EQ(runs[1].begin, 4u);
  EXPECT_EQ(runs[1].end, 6u);
  const PipelineShape shape{4, 4, 1};
  EXPECT_EQ(message_peer(shape, 0, {PipeOp::RecvActivation, 0, 0}), 3);
  EXPECT_EQ(message_peer(shape, 0, {PipeOp::SendActivation, 0, 0}), 1);
  EXPECT_EQ(message_peer(shape, 3, {PipeOp::RecvGradient, 0, 0}), 0);
  EXPECT_EQ(message_peer(shape, 3, {PipeOp::SendGradient, 0, 0}), 2);
}
