#pragma once
// Internal to experiment/: one cross-validation or search on every rank. Experiment.cpp
// runs the plan, the data and splits, the rounds of a grid, random or halving search and the
// reports; ExperimentAsync.cpp the searches that decide tasks as groups free up (asha, tpe).
#include <boost/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/ProcessGrid.hpp"
#include "config/Schema.hpp"
#include "data/Sampling.hpp"
#include "experiment/AsyncSearch.hpp"
#include "experiment/Experiment.hpp"
#include "experiment/ExperimentPlan.hpp"
#include "experiment/FoldPlan.hpp"
#include "experiment/GroupScheduler.hpp"
#include "experiment/Journal.hpp"
#include "experiment/Reports.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

class ShardedDataset;

// What rank 0 decides after a round, for every rank to act on alike.
struct RoundDecision {
  std::int32_t preempted = 0;          // tasks a preemption signal stopped: end with exit code 75
  bool stop = true;                    // no further rung
  std::vector<std::int32_t> promoted;  // the trials of the next rung (successive halving)
};

struct RoundTask {
  int trial;          // index into the plan's trials
  std::size_t split;  // index into the splits
};

class ExperimentRun {
 public:
  ExperimentRun(const ResolvedConfig& base, const Communicator& world, const std::string& run_dir)
      : base_(base), bc_(base.config), world_(world), run_dir_(run_dir), journal_(run_dir + "/tasks") {}
  ExperimentResult run();

 private:
  void load();
  void make_splits(const std::vector<std::int32_t>& labels);
  void open_journal_and_announce();
  std::vector<TaskOutcome> run_round(const std::vector<RoundTask>& tasks);
  TaskOutcome run_task(const RoundTask& task);
  std::string task_key(const RoundTask& task) const;
  RoundDecision decide(const std::vector<TaskOutcome>& outcomes);
  void keep(std::vector<TaskOutcome> outcomes);
  void keep_one(TaskOutcome outcome, int rung);
  // asha, tpe (ExperimentAsync.cpp).
  AsyncSearchSetup async_setup() const;
  void replay_journal();
  Handout hand_out();
  std::string run_spec(const std::string& spec);
  void take_outcome(const std::string& spec, const std::string& text);
  void run_async();
  ReportHeader report_header(const OutcomeCounts& counts) const;
  ExperimentResult write_reports();

  const ResolvedConfig& base_;
  const Config& bc_;
  const Communicator& world_;
  const std::string run_dir_;
  const bool root_ = world_.rank() == 0;
  const bool searching_ = bc_.search.method != "none";
  const bool halving_ = bc_.search.method == "halving";
  const bool async_ = bc_.search.method == "asha" || bc_.search.method == "tpe";
  const double start_ = wall_seconds();

  ExperimentPlan xp_;
  std::unique_ptr<GroupScheduler> scheduler_;
  std::unique_ptr<ProcessGrid> grid_;  // the group as pipeline stages x replicas
  std::unique_ptr<ShardedDataset> data_;
  bool classification_ = true;
  std::string metric_;
  FoldPlan folds_;
  std::vector<TrainValSplit> splits_;
  std::vector<std::pair<int, int>> split_ids_;  // (repeat, fold); fold -1: the holdout
  TaskJournal journal_;

  // Rounds: one for grid, random and plain CV; successive halving runs rungs of growing
  // epoch budgets over the surviving trials.
  std::vector<int> members_;    // the trials this job reports on (a shard's, or all)
  std::vector<int> survivors_;  // the trials of the current round
  int rung_ = 0;
  std::int64_t epochs_ = 0;  // halving: the rung's epochs
  // Rank 0 only.
  std::vector<TaskOutcome> outcomes_;     // every outcome, last rung last, without predictions
  std::vector<TrialStanding> standings_;  // by trial
  boost::json::array rungs_;              // halving, asha: the rungs record
  boost::json::object schedule_;          // asha, tpe: promotions, proposals, events
  std::unique_ptr<AsyncSearch> search_;   // asha, tpe
  std::int32_t preempted_ = 0;            // asha, tpe: preempted outcomes seen
};

}  // namespace hpctrain
