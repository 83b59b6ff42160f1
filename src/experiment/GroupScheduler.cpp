#include "experiment/GroupScheduler.hpp"

#include <cstdint>
#include <cstring>

#include "launch/Mpi.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

constexpr int kRequestTag = 41;  // leader -> rank 0: [int32 finished task or -1][outcome bytes]
constexpr int kAssignTag = 42;   // rank 0 -> leader: int32 next task or -1

// The same answer on every rank, so every rank throws together.
int group_of(const Communicator& world, int ranks_per_group) {
  if (ranks_per_group < 1 || world.size() % ranks_per_group != 0) {
    throw ConfigError("cv.ranks_per_group: " + std::to_string(ranks_per_group) + " does not divide the " +
                      std::to_string(world.size()) + " ranks of this launch into equal groups");
  }
  return world.rank() / ranks_per_group;
}

}  // namespace

GroupScheduler::GroupScheduler(const Communicator& world, int ranks_per_group)
    : world_(world),
      group_index_(group_of(world, ranks_per_group)),
      sched_(world.split(0, world.rank())),
      group_(world.split(group_index_, world.rank())),
      group_count_(world.size() / ranks_per_group) {}

int GroupScheduler::take_task() {
  if (next_ >= count_) return -1;
  return next_++;
}

void GroupScheduler::answer(int source) {
  MPI_Status status;
  HPCTRAIN_MPI(MPI_Probe(source, kRequestTag, sched_.raw(), &status));
  int bytes = 0;
  HPCTRAIN_MPI(MPI_Get_count(&status, MPI_BYTE, &bytes));
  std::string message(static_cast<std::size_t>(bytes), '\0');
  HPCTRAIN_MPI(
      MPI_Recv(message.data(), bytes, MPI_BYTE, status.MPI_SOURCE, kRequestTag, sched_.raw(), MPI_STATUS_IGNORE));
  std::int32_t finished = -1;
  if (message.size() >= sizeof(finished)) std::memcpy(&finished, message.data(), sizeof(finished));
  if (finished >= 0 && finished < count_) {
    outcomes_[static_cast<std::size_t>(finished)] = message.substr(sizeof(finished));
    if (on_outcome_) on_outcome_(finished, outcomes_[static_cast<std::size_t>(finished)]);
  }
  const std::int32_t next = take_task();
  if (next >= 0) {
    task_group_[static_cast<std::size_t>(next)] = status.MPI_SOURCE / group_.size();
  } else {
    ++released_;
  }
  HPCTRAIN_MPI(MPI_Send(&next, 1, MPI_INT32_T, status.MPI_SOURCE, kAssignTag, sched_.raw()));
}

void GroupScheduler::poll() {
  if (!active_ || world_.rank() != 0) return;
  while (true) {
    int flag = 0;
    HPCTRAIN_MPI(MPI_Iprobe(MPI_ANY_SOURCE, kRequestTag, sched_.raw(), &flag, MPI_STATUS_IGNORE));
    if (!flag) return;
    answer(MPI_ANY_SOURCE);
  }
}

std::vector<std::string> GroupScheduler::run(int count, const std::function<std::string(int task)>& run_task,
                                             const std::function<void(int, const std::string&)>& on_outcome) {
  const bool root = world_.rank() == 0;
  if (root) {
    on_outcome_ = on_outcome;
    active_ = true;
    count_ = count;
    next_ = 0;
    released_ = 0;
    outcomes_.assign(static_cast<std::size_t>(count), std::string());
    task_group_.assign(static_cast<std::size_t>(count), -1);
  }
  // Group 0 (led by world rank 0) takes tasks straight from the queue; the other leaders
  // ask for them. Every group hands each task id to its members with a broadcast.
  std::int32_t finished = -1;
  std::string outcome;
  while (true) {
    std::int32_t task = -1;
    if (root) {
      // Groups that asked while rank 0 was busy come first: they have been idle longer.
      poll();
      task = take_task();
      if (task >= 0) task_group_[static_cast<std::size_t>(task)] = 0;
    } else if (leader()) {
      std::string message(sizeof(finished), '\0');
      std::memcpy(message.data(), &finished, sizeof(finished));
      message += outcome;
      HPCTRAIN_MPI(MPI_Send(message.data(), static_cast<int>(message.size()), MPI_BYTE, 0, kRequestTag, sched_.raw()));
      HPCTRAIN_MPI(MPI_Recv(&task, 1, MPI_INT32_T, 0, kAssignTag, sched_.raw(), MPI_STATUS_IGNORE));
    }
    group_.broadcast(&task, sizeof(task), 0);
    if (task < 0) break;
    outcome = run_task(task);
    finished = task;
    if (root) {
      outcomes_[static_cast<std::size_t>(task)] = outcome;
      if (on_outcome_) on_outcome_(task, outcome);
    }
  }
  if (root) {
    // Serve the other groups until each has been told there is no more work.
    while (released_ < group_count_ - 1) answer(MPI_ANY_SOURCE);
    active_ = false;
    on_outcome_ = nullptr;
    return std::move(outcomes_);
  }
  return {};
}

}  // namespace hpctrain
