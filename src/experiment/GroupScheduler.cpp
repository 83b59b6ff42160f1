#include "experiment/GroupScheduler.hpp"

#include "launch/Mpi.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

constexpr int kRequestTag = 41;  // leader -> rank 0: [byte 1: a finished task's outcome follows, or 0][outcome]
constexpr int kAssignTag = 42;   // rank 0 -> leader: the next task's spec, empty for no more work

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

void GroupScheduler::send_assignment(int leader, const std::string& spec) {
  HPCTRAIN_MPI(MPI_Send(spec.data(), static_cast<int>(spec.size()), MPI_BYTE, leader, kAssignTag, sched_.raw()));
}

void GroupScheduler::serve_waiting() {
  while (!waiting_.empty()) {
    const int leader = waiting_.front();
    const int group = leader / group_.size();
    Handout h = next_(group);
    // Nothing running can change the answer: a wait would last forever.
    if (h.kind == Handout::Wait && in_flight_.empty()) h.kind = Handout::Done;
    if (h.kind == Handout::Wait) return;
    waiting_.pop_front();
    if (h.kind == Handout::Task) {
      in_flight_[group] = h.spec;
    } else {
      h.spec.clear();
      ++released_;
    }
    send_assignment(leader, h.spec);
  }
}

void GroupScheduler::answer(int source) {
  MPI_Status status;
  HPCTRAIN_MPI(MPI_Probe(source, kRequestTag, sched_.raw(), &status));
  int bytes = 0;
  HPCTRAIN_MPI(MPI_Get_count(&status, MPI_BYTE, &bytes));
  std::string message(static_cast<std::size_t>(bytes), '\0');
  HPCTRAIN_MPI(
      MPI_Recv(message.data(), bytes, MPI_BYTE, status.MPI_SOURCE, kRequestTag, sched_.raw(), MPI_STATUS_IGNORE));
  const int group = status.MPI_SOURCE / group_.size();
  const auto running = in_flight_.find(group);
  if (!message.empty() && message[0] == 1 && running != in_flight_.end()) {
    const std::string spec = running->second;
    in_flight_.erase(running);
    if (on_outcome_) on_outcome_(spec, message.substr(1));
  }
  waiting_.push_back(status.MPI_SOURCE);
  serve_waiting();
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
  std::vector<std::string> outcomes;
  int next = 0;
  if (world_.rank() == 0) {
    outcomes.assign(static_cast<std::size_t>(count), std::string());
    task_group_.assign(static_cast<std::size_t>(count), -1);
  }
  run_dynamic(
      [&](int group) {
        if (next >= count) return Handout{Handout::Done, {}};
        task_group_[static_cast<std::size_t>(next)] = group;
        return Handout{Handout::Task, std::to_string(next++)};
      },
      [&](const std::string& spec) { return run_task(std::stoi(spec)); },
      [&](const std::string& spec, const std::string& outcome) {
        const int task = std::stoi(spec);
        outcomes[static_cast<std::size_t>(task)] = outcome;
        if (on_outcome) on_outcome(task, outcome);
      });
  return outcomes;
}

void GroupScheduler::run_dynamic(const std::function<Handout(int group)>& next,
                                 const std::function<std::string(const std::string& spec)>& run_task,
                                 const std::function<void(const std::string&, const std::string&)>& on_outcome) {
  const bool root = world_.rank() == 0;
  if (root) {
    next_ = next;
    on_outcome_ = on_outcome;
    active_ = true;
    released_ = 0;
    in_flight_.clear();
    waiting_.clear();
  }
  // Group 0 (led by world rank 0) asks next() directly; the other leaders send a request
  // (a byte 1 and the outcome of the task they finished, or a byte 0) and receive the spec
  // of their next task (empty: no more work). Every group hands the spec to its members.
  std::string outcome;
  bool finished = false;
  while (true) {
    std::string spec;
    if (root) {
      // Groups that asked while rank 0 was busy come first: they have been idle longer.
      poll();
      while (true) {
        Handout h = next_(0);
        if (h.kind == Handout::Wait && in_flight_.empty()) h.kind = Handout::Done;
        if (h.kind == Handout::Task) in_flight_[0] = h.spec;
        if (h.kind != Handout::Wait) {
          spec = h.kind == Handout::Task ? h.spec : std::string();
          break;
        }
        answer(MPI_ANY_SOURCE);  // another group's outcome may make work
      }
    } else if (leader()) {
      std::string message(1, finished ? '\1' : '\0');
      message += outcome;
      HPCTRAIN_MPI(MPI_Send(message.data(), static_cast<int>(message.size()), MPI_BYTE, 0, kRequestTag, sched_.raw()));
      MPI_Status status;
      HPCTRAIN_MPI(MPI_Probe(0, kAssignTag, sched_.raw(), &status));
      int bytes = 0;
      HPCTRAIN_MPI(MPI_Get_count(&status, MPI_BYTE, &bytes));
      spec.assign(static_cast<std::size_t>(bytes), '\0');
      HPCTRAIN_MPI(MPI_Recv(spec.data(), bytes, MPI_BYTE, 0, kAssignTag, sched_.raw(), MPI_STATUS_IGNORE));
    }
    group_.broadcast(spec, 0);
    if (spec.empty()) break;
    outcome = run_task(spec);
    finished = true;
    if (root) {
      in_flight_.erase(0);
      if (on_outcome_) on_outcome_(spec, outcome);
      serve_waiting();  // this outcome may make work for groups told to wait
    }
  }
  if (root) {
    // Serve the other groups until each has been told there is no more work.
    while (released_ < group_count_ - 1) answer(MPI_ANY_SOURCE);
    active_ = false;
    next_ = nullptr;
    on_outcome_ = nullptr;
  }
}

}  // namespace hpctrain
