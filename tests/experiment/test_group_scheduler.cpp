// GroupScheduler over real ranks: every task runs exactly once on one whole group, rank 0
// gets every outcome in task order, a slow task does not hold back the others (dynamic
// hand-out while rank 0 trains), and a bad group size fails on every rank.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "comm/Communicator.hpp"
#include "experiment/GroupScheduler.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

namespace {

void run_all_tasks_once(int ranks_per_group) {
  Communicator world = Communicator::world();
  if (world.size() % ranks_per_group != 0) GTEST_SKIP() << "world size not a multiple";
  GroupScheduler s(world, ranks_per_group);
  EXPECT_EQ(s.group_count(), world.size() / ranks_per_group);
  EXPECT_EQ(s.group().size(), ranks_per_group);
  const int count = 11;
  std::vector<int> mine;
  const auto outcomes = s.run(count, [&](int task) {
    // Every member of the group is handed the same task.
    double v = task, lo = task, hi = task;
    s.group().allreduce_min(&lo, 1);
    s.group().allreduce_max(&hi, 1);
    EXPECT_EQ(lo, v);
    EXPECT_EQ(hi, v);
    mine.push_back(task);
    return "task " + std::to_string(task) + " group " + std::to_string(s.group_index());
  });
  // Each task ran in exactly one group: summed over leaders, every id once.
  std::vector<std::int64_t> runs(count, 0);
  if (s.leader()) {
    for (int t : mine) ++runs[static_cast<std::size_t>(t)];
  }
  world.allreduce_sum(runs.data(), runs.size());
  for (int t = 0; t < count; ++t) EXPECT_EQ(runs[static_cast<std::size_t>(t)], 1) << "task " << t;
  if (world.rank() == 0) {
    ASSERT_EQ(outcomes.size(), static_cast<std::size_t>(count));
    for (int t = 0; t < count; ++t) {
      const int g = s.task_groups()[static_cast<std::size_t>(t)];
      EXPECT_EQ(outcomes[static_cast<std::size_t>(t)], "task " + std::to_string(t) + " group " + std::to_string(g));
    }
  } else {
    EXPECT_TRUE(outcomes.empty());
  }
}

}  // namespace

TEST(GroupScheduler, EveryTaskOnceInGroupsOfOne) {
  run_all_tasks_once(1);
}
TEST(GroupScheduler, EveryTaskOnceInGroupsOfTwo) {
  run_all_tasks_once(2);
}

TEST(GroupScheduler, SlowTaskDoesNotHoldBackTheOthers) {
  Communicator world = Communicator::world();
  GroupScheduler s(world, 1);
  if (s.group_count() < 2) GTEST_SKIP() << "needs two groups";
  const int count = 3 * s.group_count();
  const auto outcomes = s.run(count, [&](int task) {
    // Task 0 (taken first by group 0, rank 0's) is slow; rank 0 keeps answering requests
    // between its "steps", as the trainer's step callback does.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(task == 0 ? 1500 : 20);
    while (std::chrono::steady_clock::now() < until) {
      s.poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return std::to_string(task);
  });
  if (world.rank() == 0) {
    EXPECT_EQ(s.task_groups()[0], 0);
    // All other tasks went to the other groups while group 0 was busy.
    for (int t = 1; t < count; ++t) EXPECT_NE(s.task_groups()[static_cast<std::size_t>(t)], 0) << "task " << t;
  }
}

TEST(GroupScheduler, NoTasks) {
  Communicator world = Communicator::world();
  GroupScheduler s(world, 1);
  const auto outcomes = s.run(0, [](int) { return std::string("x"); });
  EXPECT_TRUE(outcomes.empty());
}

TEST(GroupScheduler, GroupSizeThatDoesNotDivideFailsEverywhere) {
  Communicator world = Communicator::world();
  try {
    GroupScheduler s(world, world.size() + 1);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cv.ranks_per_group"), std::string::npos) << e.what();
  }
}

// run_dynamic: rank 0 decides each task when a group asks. Here task i+1 exists only once
// task i's outcome is in, so every other group is told to wait (and asked again when an
// outcome arrives); the chain still runs to the end, in order, on whichever groups ask.
TEST(GroupScheduler, DynamicHandOutWaitsForOutcomes) {
  Communicator world = Communicator::world();
  GroupScheduler s(world, 1);
  const int count = 7;
  int handed = 0, arrived = 0;
  std::vector<std::string> order;
  s.run_dynamic(
      [&](int) {
        if (handed == count) return Handout{Handout::Done, {}};
        if (handed > arrived) return Handout{Handout::Wait, {}};
        return Handout{Handout::Task, std::to_string(handed++)};
      },
      [&](const std::string& spec) { return "done " + spec; },
      [&](const std::string&, const std::string& outcome) {
        order.push_back(outcome);
        ++arrived;
      });
  if (world.rank() == 0) {
    ASSERT_EQ(order.size(), static_cast<std::size_t>(count));
    for (int t = 0; t < count; ++t) EXPECT_EQ(order[static_cast<std::size_t>(t)], "done " + std::to_string(t));
  }
}
