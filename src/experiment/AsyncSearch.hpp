#pragma once
// Rank 0's side of a search that decides its tasks as groups free up (search.method tpe or
// asha), as a pure state machine: next() when a group asks for work, arrive() when a
// task's outcome comes back. Every decision is a function of search.seed and the order of
// those calls, which it records as events (RUN_DIR/tasks/events.jsonl, search_report.json
// "events"): replaying them into a fresh instance restores its state exactly, which is how
// a resumed search goes on as the interrupted one would have (docs/cv-and-search.md).
#include <boost/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "experiment/Asha.hpp"
#include "experiment/SearchSpace.hpp"
#include "experiment/TaskOutcome.hpp"
#include "experiment/Tpe.hpp"

namespace hpctrain {

struct AsyncSearchSetup {
  std::string method;                // "tpe" or "asha"
  SearchSpace space;                 // tpe: what proposals draw from
  std::int64_t tpe_trials = 0;       // tpe: how many trials to propose
  TpeSettings tpe;                   // tpe
  std::vector<Trial> trials;         // asha: every trial, up front (the grid or search.trials draws)
  std::int64_t eta = 2;              // asha: search.halving_eta
  std::vector<std::int64_t> epochs;  // asha: each rung's epochs (asha_rung_epochs)
  std::uint64_t seed = 0;            // search.seed
  std::size_t split_count = 1;       // folds x repeats, or 1 for the holdout
  std::string metric;                // resolved search.metric
  bool lower_is_better = false;
};

// One task: a trial at a rung on a split. epochs 0: the trial's own train.epochs.
struct SearchTask {
  int trial = 0;
  int rung = 0;
  std::size_t split = 0;
  std::int64_t epochs = 0;
};

class AsyncSearch {
 public:
  explicit AsyncSearch(AsyncSearchSetup setup);

  // A group needs work: Task (filled into `task` and recorded), Wait (nothing until a
  // result arrives) or Done (nothing will come: every trial is finished or stop() was called).
  enum class Next { Task, Wait, Done };
  Next next(SearchTask& task);
  // A started task's outcome (ok or failed; a preempted task is not a result: it is not passed).
  void arrive(const SearchTask& task, const TaskOutcome& outcome);
  // A resumed run: the tasks started and not arrived go out again first (recorded).
  void resume();
  // No task is handed out any more (a preemption signal).
  void stop() { stopped_ = true; }

  // Replays recorded events: each start must be what next() gives again (else DataError
  // naming event i), each result's outcome comes from find (nullptr: the replay ends
  // there). Returns how many events were replayed.
  std::size_t replay(const boost::json::array& events,
                     const std::function<const TaskOutcome*(const SearchTask&)>& find);

  std::size_t running() const { return running_.size(); }
  const std::vector<Trial>& trials() const { return trials_; }  // every trial started or planned
  const boost::json::array& events() const { return events_; }
  // Each trial-rung's score when its last split arrived, in that order.
  const std::vector<std::pair<int, RungScore>>& scored() const { return scored_; }
  // asha: the rungs record (as halving's, trials in arrival order) and the promotions.
  boost::json::array rungs_record() const;
  boost::json::array promotions_record() const;
  // tpe: per trial, how many results its proposal saw and whether it was a startup draw.
  boost::json::array proposals_record() const;
  const AsyncSearchSetup& setup() const { return setup_; }

  static boost::json::object event(const char* kind, const SearchTask& task);

 private:
  bool start_trial();  // queues the splits of the policy's next trial-rung; false: none now
  void record(const char* kind, const SearchTask& task) { events_.push_back(event(kind, task)); }

  AsyncSearchSetup setup_;
  std::optional<AshaLadder> ladder_;
  std::vector<Trial> trials_;
  std::vector<TpeObservation> finished_;                             // tpe: scored trials by index
  std::vector<std::size_t> seen_;                                    // tpe: by trial, finished_.size() at its proposal
  std::vector<SearchTask> queue_;                                    // tasks to hand out, first first
  std::vector<SearchTask> running_;                                  // handed out, no outcome yet
  std::map<std::pair<int, int>, std::vector<TaskOutcome>> partial_;  // (trial, rung) -> outcomes so far
  std::vector<std::pair<int, RungScore>> scored_;
  boost::json::array events_;
  bool stopped_ = false;
};

}  // namespace hpctrain
