#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pipeline_shapes.hpp"
#include "train/PipelineSchedule.hpp"
#include "util/Error.hpp"

using namespace hpctrain;
using hpctrain::testing::for_each_shape;

namespace {

using Table = std::vector<std::vector<PipeAction>>;

const ScheduleKind kKinds[] = {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved};

// A message of `what` (thrown by `f`) is a ConfigError and names `key`.
void expect_config_error(const std::function<void()>& f, const std::string& key) {
  try {
    f();
    ADD_FAILURE() << "no ConfigError naming " << key;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

int count(const std::vector<PipeAction>& actions, PipeOp op) {
  return static_cast<int>(
      std::count_if(actions.begin(), actions.end(), [op](const PipeAction& a) { return a.op == op; }));
}

}  // namespace

TEST(PipelineSchedule, KindNamesRoundTripAndBadNameNamesTheKey) {
  for (ScheduleKind kind : kKinds) EXPECT_EQ(parse_schedule_kind(schedule_kind_name(kind)), kind);
  EXPECT_EQ(schedule_kind_name(ScheduleKind::OneFOneB), "1f1b");
  expect_config_error([] { parse_schedule_kind("1F1B-interleaved"); }, "parallel.schedule");
  expect_config_error([] { parse_schedule_kind(""); }, "parallel.schedule");
}

TEST(PipelineSchedule, VirtualStagesPlaceStemFirstAndHeadLast) {
  const PipelineShape shape{4, 8, 2};
  EXPECT_EQ(virtual_stage(shape, 0, 0), 0);
  EXPECT_EQ(virtual_stage(shape, 3, 0), 3);
  EXPECT_EQ(virtual_stage(shape, 0, 1), 4);
  EXPECT_EQ(virtual_stage(shape, 3, 1), 7);
}

TEST(PipelineSchedule, ShapeCheckNamesTheKey) {
  expect_config_error([] { check_pipeline_shape(ScheduleKind::OneFOneB, {0, 4, 1}); }, "parallel.pipeline_stages");
  expect_config_error([] { check_pipeline_shape(ScheduleKind::GPipe, {2, 0, 1}); }, "parallel.microbatches");
  expect_config_error([] { check_pipeline_shape(ScheduleKind::OneFOneB, {2, 4, 2}); }, "parallel.chunks");
  expect_config_error([] { check_pipeline_shape(ScheduleKind::Interleaved, {2, 4, 1}); }, "parallel.chunks");
  expect_config_error([] { check_pipeline_shape(ScheduleKind::Interleaved, {1, 4, 2}); }, "parallel.pipeline_stages");
  // m below p and m not a multiple of p: rejected for interleaved, fine for the others.
  for (int p : {2, 4, 8}) {
    for (int m = 1; m <= 4 * p; ++m) {
      for (int v : {2, 3}) {
        if (m % p == 0) {
          EXPECT_NO_THROW(check_pipeline_shape(ScheduleKind::Interleaved, {p, m, v}));
        } else {
          expect_config_error(
              [&] {
                check_pipeline_shape(ScheduleKind::Interleaved, {p, m, v});
              },
              "parallel.microbatches");
          expect_config_error([&] { pipeline_table(ScheduleKind::Interleaved, {p, m, v}); }, "parallel.microbatches");
        }
      }
      EXPECT_NO_THROW(check_pipeline_shape(ScheduleKind::OneFOneB, {p, m, 1}));
    }
  }
}

TEST(PipelineSchedule, EveryTableIsCompleteAndDeadlockFree) {
  for_each_shape([](ScheduleKind kind, const PipelineShape& shape) {
    const Table table = pipeline_table(kind, shape);
    ASSERT_EQ(static_cast<int>(table.size()), shape.stages);
    EXPECT_EQ(check_table(table, shape), "");
    for (int s = 0; s < shape.stages; ++s) {
      EXPECT_EQ(pipeline_actions(kind, shape, s), table[s]);
      EXPECT_EQ(count(table[s], PipeOp::Forward), shape.microbatches * shape.chunks);
      EXPECT_EQ(count(table[s], PipeOp::Backward), shape.microbatches * shape.chunks);
    }
    const Simulation sim = simulate(table, shape);
    EXPECT_TRUE(sim.finished) << sim.problem;
    EXPECT_EQ(sim.problem, "");
  });
}

// The executor relies on it: a Recv is immediately followed by the compute that needs it, a
// Send immediately follows the compute that produced it.
TEST(PipelineSchedule, RecvsStandRightBeforeAndSendsRightAfterTheirCompute) {
  for_each_shape([](ScheduleKind kind, const PipelineShape& shape) {
    for (const auto& actions : pipeline_table(kind, shape)) {
      for (std::size_t i = 0; i < actions.size(); ++i) {
        const PipeAction& a = actions[i];
        auto expect_at = [&](std::size_t j, PipeOp compute) {
          ASSERT_LT(j, actions.size());
          EXPECT_EQ(actions[j], (PipeAction{compute, a.microbatch, a.chunk})) << format_actions(actions);
        };
        if (a.op == PipeOp::RecvActivation) expect_at(i + 1, PipeOp::Forward);
        if (a.op == PipeOp::RecvGradient) expect_at(i + 1, PipeOp::Backward);
        if (a.op == PipeOp::SendActivation) expect_at(i - 1, PipeOp::Forward);
        if (a.op == PipeOp::SendGradient) expect_at(i - 1, PipeOp::Backward);
      }
    }
  });
}

TEST(PipelineSchedule, SimulatedBubbleEqualsTheory) {
  for_each_shape([](ScheduleKind kind, const PipelineShape& shape) {
    const Table table = pipeline_table(kind, shape);
    EXPECT_NEAR(simulate(table, shape, 1.0, 2.0).bubble, theoretical_bubble(kind, shape), 1e-9);
    // The theory holds for any backward/forward ratio when communication is free.
    EXPECT_NEAR(simulate(table, shape, 1.0, 1.0).bubble, theoretical_bubble(kind, shape), 1e-9);
  });
  EXPECT_NEAR(theoretical_bubble(ScheduleKind::OneFOneB, {4, 8, 1}), 3.0 / 11, 1e-15);
  EXPECT_NEAR(theoretical_bubble(ScheduleKind::Interleaved, {4, 8, 2}), 3.0 / 19, 1e-15);
  const Simulation one = simulate(pipeline_table(ScheduleKind::OneFOneB, {4, 8, 1}), {4, 8, 1});
  EXPECT_DOUBLE_EQ(one.makespan, (8 + 4 - 1) * 3.0);
}

TEST(PipelineSchedule, OneFOneBHoldsAtMostPMicrobatchesAndGPipeHoldsAll) {
  for_each_shape([](ScheduleKind kind, const PipelineShape& shape) {
    const Simulation sim = simulate(pipeline_table(kind, shape), shape);
    ASSERT_EQ(static_cast<int>(sim.peak_in_flight.size()), shape.stages);
    const int p = shape.stages, m = shape.microbatches;
    if (kind == ScheduleKind::OneFOneB) {
      EXPECT_LE(sim.peak_in_flight[0], std::min(p, m));
      for (int s = 0; s < p; ++s) EXPECT_EQ(sim.peak_in_flight[s], std::min(p - s, m));
    } else if (kind == ScheduleKind::GPipe) {
      for (int s = 0; s < p; ++s) EXPECT_EQ(sim.peak_in_flight[s], m);
    }
  });
}

// peak_held (what `hpctrain plan` multiplies by the measured bytes) agrees with the simulation
// when every chunk weighs 1, and weighs chunks: with chunk 1 free, only chunk 0's pairs count.
TEST(PipelineSchedule, PeakHeldWeighsTheSimulatedInFlightPairs) {
  for_each_shape([](ScheduleKind kind, const PipelineShape& shape) {
    const Table table = pipeline_table(kind, shape);
    const Simulation sim = simulate(table, shape);
    for (int s = 0; s < shape.stages; ++s) {
      const std::vector<double> ones(static_cast<std::size_t>(shape.chunks), 1.0);
      EXPECT_EQ(peak_held(table[static_cast<std::size_t>(s)], ones), sim.peak_in_flight[static_cast<std::size_t>(s)]);
      std::vector<double> first_only(static_cast<std::size_t>(shape.chunks), 0.0);
      first_only[0] = 3.0;
      const double peak = peak_held(table[static_cast<std::size_t>(s)], first_only);
      EXPECT_LE(peak, 3.0 * shape.microbatches);
      EXPECT_GE(peak, 3.0);
      if (shape.chunks == 1) {
        EXPECT_EQ(peak, 3.0 * sim.peak_in_flight[static_cast<std::size_t>(s)]);
      }
    }
  });
}

TEST(PipelineSchedule, FormatsOneFOneBForTwoStages) {
  const Table table = pipeline_table(ScheduleKind::OneFOneB, {2, 2, 1});
  EXPECT_EQ(format_actions(table[0]), "F0.0 SA0.0 F1.0 SA1.0 RG0.0 B0.0 RG1.0 B1.0");
  EXPECT_EQ(format_actions(table[1]), "RA0.0 F0.0 B0.0 SG0.0 RA1.0 F1.0 B1.0 SG1.0");
  EXPECT_EQ(format_actions({}), "");
}

// Megatron's interleaved order on 2 ranks, 4 microbatches, 2 chunks: microbatches pass the
// chunks in groups of p = 2, and the backwards take the chunks in reverse order.
TEST(PipelineSchedule, InterleavedFollowsMegatronsOrder) {
  const Table table = pipeline_table(ScheduleKind::Interleaved, {2, 4, 2});
  EXPECT_EQ(format_actions(table[0]),
            "F0.0 SA0.0 F1.0 SA1.0 RA0.1 F0.1 SA0.1 RA1.1 F1.1 SA1.1 F2.0 SA2.0 RG0.1 B0.1 SG0.1 F3.0 SA3.0 "
            "RG1.1 B1.1 SG1.1 RA2.1 F2.1 SA2.1 RG0.0 B0.0 RA3.1 F3.1 SA3.1 RG1.0 B1.0 RG2.1 B2.1 SG2.1 "
            "RG3.1 B3.1 SG3.1 RG2.0 B2.0 RG3.0 B3.0");
  EXPECT_EQ(format_actions(table[1]),
            "RA0.0 F0.0 SA0.0 RA1.0 F1.0 SA1.0 RA0.1 F0.1 B0.1 SG0.1 RA1.1 F1.1 B1.1 SG1.1 RA2.0 F2.0 SA2.0 "
            "RG0.0 B0.0 SG0.0 RA3.0 F3.0 SA3.0 RG1.0 B1.0 SG1.0 RA2.1 F2.1 B2.1 SG2.1 RA3.1 F3.1 B3.1 SG3.1 "
            "RG2.0 B2.0 SG2.0 RG3.0 B3.0 SG3.0");
}

TEST(PipelineSchedule, RecvMovedAfterItsUseIsCaught) {
  const PipelineShape shape{2, 2, 1};
  Table table = pipeline_table(ScheduleKind::OneFOneB, shape);
  std::swap(table[1][0], table[1][1]);  // F0.0 RA0.0 on rank 1
  EXPECT_NE(check_table(table, shape).find("RA0.0"), std::string::npos) << check_table(table, shape);
  const Simulation sim = simulate(table, shape);
  EXPECT_FALSE(sim.finished);
  EXPECT_NE(sim.problem.find("rank 1 F0.0"), std::string::npos) << sim.problem;
}

TEST(PipelineSchedule, DroppedSendIsCaughtAsDeadlock) {
  const PipelineShape shape{2, 2, 1};
  Table table = pipeline_table(ScheduleKind::OneFOneB, shape);
  const PipeAction send{PipeOp::SendActivation, 1, 0};
  table[0].erase(std::find(table[0].begin(), table[0].end(), send));
  EXPECT_NE(check_table(table, shape), "");
  const Simulation sim = simulate(table, shape);
  EXPECT_FALSE(sim.finished);
  EXPECT_NE(sim.problem.find("deadlock"), std::string::npos) << sim.problem;
  EXPECT_NE(sim.problem.find("rank 1 RA1.0 waits"), std::string::npos) << sim.problem;
}

// Every action in place, but rank 0 waits for a gradient before sending the activation that
// would produce it: only the simulation can see the cycle.
TEST(PipelineSchedule, CyclicWaitPassesTheStaticCheckButNotTheSimulation) {
  const PipelineShape shape{2, 1, 1};
  const Table table = {
      {{PipeOp::Forward, 0, 0}, {PipeOp::RecvGradient, 0, 0}, {PipeOp::SendActivation, 0, 0}, {PipeOp::Backward, 0, 0}},
      {{PipeOp::RecvActivation, 0, 0},
       {PipeOp::Forward, 0, 0},
       {PipeOp::Backward, 0, 0},
       {PipeOp::SendGradient, 0, 0}}};
  EXPECT_EQ(check_table(table, shape), "");
  const Simulation sim = simulate(table, shape);
  EXPECT_FALSE(sim.finished);
  EXPECT_NE(sim.problem.find("deadlock"), std::string::npos) << sim.problem;
}

TEST(PipelineSchedule, ExtraSendAndWrongShapesAreReported) {
  const PipelineShape shape{2, 2, 1};
  Table table = pipeline_table(ScheduleKind::GPipe, shape);
  table[0].push_back({PipeOp::SendActivation, 1, 0});
  EXPECT_NE(check_table(table, shape), "");
  EXPECT_NE(simulate(table, shape).problem.find("never received"), std::string::npos);
  table = pipeline_table(ScheduleKind::GPipe, shape);
  table[1].push_back({PipeOp::Forward, 5, 0});
  EXPECT_NE(check_table(table, shape).find("outside"), std::string::npos);
  EXPECT_FALSE(simulate(table, shape).finished);
  table.pop_back();
  EXPECT_NE(check_table(table, shape), "");
}

namespace {

double largest_group(const std::vector<double>& costs, const std::vector<std::int64_t>& starts) {
  double worst = 0;
  for (std::size_t g = 0; g < starts.size(); ++g) {
    const std::size_t end = g + 1 < starts.size() ? static_cast<std::size_t>(starts[g + 1]) : costs.size();
    EXPECT_LT(static_cast<std::size_t>(starts[g]), end) << "empty group " << g;
    double sum = 0;
    for (std::size_t i = static_cast<std::size_t>(starts[g]); i < end; ++i) sum += costs[i];
    worst = std::max(worst, sum);
  }
  return worst;
}

// The smallest largest-group cost over every split, by enumeration.
double brute_force_best(const std::vector<double>& costs, int parts) {
  const int n = static_cast<int>(costs.size());
  double best = 1e300;
  std::vector<std::int64_t> starts(parts, 0);
  std::function<void(int, int)> place = [&](int g, int from) {
    if (g == parts) {
      best = std::min(best, largest_group(costs, starts));
      return;
    }
    for (int s = from; s <= n - (parts - g); ++s) {
      starts[g] = s;
      place(g + 1, s + 1);
    }
  };
  place(1, 1);
  return best;
}

}  // namespace

TEST(StageSplit, BalancedSplitOnKnownCosts) {
  using V = std::vector<std::int64_t>;
  EXPECT_EQ(balanced_split({1, 1, 1, 1}, 2), (V{0, 2}));
  EXPECT_EQ(balanced_split({1, 2, 3, 4, 5}, 2), (V{0, 3}));      // 6 | 9
  EXPECT_EQ(balanced_split({1, 1, 10, 1, 1}, 3), (V{0, 2, 3}));  // the heavy block alone
  EXPECT_EQ(balanced_split({5, 1, 3}, 3), (V{0, 1, 2}));         // parts == blocks
  EXPECT_EQ(balanced_split({5, 1, 3}, 1), (V{0}));
  // Ties go to the later stages: the last group is as large as the bound allows.
  EXPECT_EQ(balanced_split({1, 1, 1}, 2), (V{0, 1}));
  EXPECT_EQ(balanced_split({2, 2, 2, 2, 2, 2}, 4), (V{0, 1, 2, 4}));
  EXPECT_EQ(balanced_split({0, 0, 0, 0}, 2), (V{0, 1}));
  expect_config_error([] { balanced_split({1, 2, 3}, 4); }, "parallel.pipeline_stages");
  expect_config_error([] { balanced_split({}, 1); }, "parallel.pipeline_stages");
  expect_config_error([] { balanced_split({1, 2}, 0); }, "parallel.pipeline_stages");
  EXPECT_THROW(balanced_split({1, -1}, 2), std::invalid_argument);
}

TEST(StageSplit, BalancedSplitIsOptimal) {
  std::uint32_t state = 12345;  // a fixed LCG: the same vectors on every run
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<double>((state >> 16) % 20);
  };
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + trial % 9;
    std::vector<double> costs(n);
    for (double& c : costs) c = next() * 0.1;
    for (int parts = 1; parts <= n; ++parts) {
      const auto starts = balanced_split(costs, parts);
      ASSERT_EQ(static_cast<int>(starts.size()), parts);
      EXPECT_EQ(starts[0], 0);
      EXPECT_NEAR(largest_group(costs, starts), brute_force_best(costs, parts), 1e-12);
    }
  }
}

TEST(StageSplit, ExplicitSplitIsCheckedAgainstBlocksAndStages) {
  using V = std::vector<std::int64_t>;
  EXPECT_EQ(explicit_split({3, 5}, 8, 3), (V{0, 3, 5}));
  EXPECT_EQ(explicit_split({}, 8, 1), (V{0}));
  expect_config_error([] { explicit_split({3}, 8, 3); }, "parallel.stage_split");
  expect_config_error([] { explicit_split({5, 3}, 8, 3); }, "parallel.stage_split");
  expect_config_error([] { explicit_split({0, 3}, 8, 3); }, "parallel.stage_split");
  expect_config_error([] { explicit_split({3, 8}, 8, 3); }, "parallel.stage_split");
  expect_config_error([] { explicit_split({1, 2, 3}, 3, 4); }, "parallel.stage_split");
}
