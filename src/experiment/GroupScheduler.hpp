#pragma once
// Runs a list of tasks (cross-validation folds, search trials) over groups of ranks in
// one launch. The world is split into groups of `ranks_per_group` consecutive ranks; each
// group runs one task at a time on its own communicator. Tasks are handed out
// dynamically: when a group finishes, its leader asks world rank 0 for the next task, so a
// slow task does not idle the other groups. World rank 0 trains in group 0 as well and
// answers requests between its own training steps (poll), so no rank is set aside.
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

// Rank 0's answer to a group that asks for work, in a dynamic run: a task (its description,
// never empty), nothing yet (the group waits until another task's outcome arrives), or no
// more work.
struct Handout {
  enum Kind { Task, Wait, Done } kind = Done;
  std::string spec;
};

class GroupScheduler {
 public:
  // Collective over `world`. Throws ConfigError when the world size is not a multiple of
  // ranks_per_group.
  GroupScheduler(const Communicator& world, int ranks_per_group);

  const Communicator& group() const { return group_; }
  int group_index() const { return group_index_; }
  int group_count() const { return group_count_; }
  bool leader() const { return group_.rank() == 0; }

  // Collective over the world. Runs tasks 0..count-1: run_task(task) is called on every
  // rank of the group that takes the task and returns the task's outcome on the group's
  // leader (other ranks' return values are ignored). Returns every outcome, by task, on
  // world rank 0; empty elsewhere. run_task must not throw unless every rank of its group
  // throws (catch agreed failures inside and turn them into an outcome).
  // on_outcome (world rank 0) is called with each outcome as it arrives, so a caller can
  // record finished tasks before the whole run ends.
  std::vector<std::string> run(int count, const std::function<std::string(int task)>& run_task,
                               const std::function<void(int task, const std::string& outcome)>& on_outcome = {});

  // Collective over the world. Tasks decided as they are handed out: next(group) is called on
  // world rank 0 each time a group needs work, so a task can depend on every outcome that
  // arrived before. A group told to wait is asked again after the next outcome arrives (if
  // nothing is running, a wait is taken as no more work). run_task(spec) runs on every rank
  // of the group the task went to and returns the outcome on its leader; on_outcome(spec,
  // outcome) is called on world rank 0 as each outcome arrives. Same rules as run().
  void run_dynamic(const std::function<Handout(int group)>& next,
                   const std::function<std::string(const std::string& spec)>& run_task,
                   const std::function<void(const std::string& spec, const std::string& outcome)>& on_outcome);

  // World rank 0: answers the requests of groups that finished a task. Call it often while
  // rank 0 runs a task of its own (no-op on other ranks, and outside run()).
  void poll();

  // Which group ran each task (world rank 0, after run()).
  const std::vector<int>& task_groups() const { return task_group_; }

 private:
  void answer(int source);  // world rank 0: receive one request, pass on its outcome, reply or park it
  void serve_waiting();     // world rank 0: reply to parked requests while next() has work or is done
  void send_assignment(int leader, const std::string& spec);

  const Communicator& world_;
  int group_index_ = 0;
  Communicator sched_;  // private duplicate of the world: scheduler messages only
  Communicator group_;
  int group_count_ = 1;
  // World rank 0's state while run() is active.
  bool active_ = false;
  int released_ = 0;                      // remote leaders told there is no more work
  std::map<int, std::string> in_flight_;  // group -> the spec it runs
  std::deque<int> waiting_;               // remote leaders (world ranks) told nothing yet
  std::function<Handout(int)> next_;
  std::function<void(const std::string&, const std::string&)> on_outcome_;
  std::vector<int> task_group_;
};

}  // namespace hpctrain
