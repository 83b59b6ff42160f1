#pragma once
// One launch that runs a k-fold cross-validation or a hyperparameter search: the world is
// split into groups of ranks (GroupScheduler), each task (one trial on one fold, or on
// the validation holdout) trains data-parallel on its group, and world rank 0 gathers
// the outcomes into the reports (docs/cv-and-search.md).
#include <string>

#include "comm/Communicator.hpp"
#include "config/Schema.hpp"

namespace hpctrain {

struct ExperimentResult {
  bool any_ok = false;        // at least one task finished
  std::string chosen_config;  // resolved JSON of the configuration to retrain (every rank)
  std::string summary_text;   // what rank 0 prints at the end
};

// Collective over `world`. Writes the reports under run_dir (rank 0).
ExperimentResult run_experiment(const ResolvedConfig& base, const Communicator& world, const std::string& run_dir);

// Joins a search that ran as shards (search.shards > 1: one job each, e.g. the tasks of a
// Slurm job array) into one leaderboard. The shards' run directories are the folders directly
// under run_dir that hold a search_report.json; the merged search_report.json,
// leaderboard.csv/.md and best_config.json go into run_dir, as one job would have written
// them. Trials of a shard that left no report are listed as failed. One process; throws
// DataError naming the file for anything inconsistent. Defined in ShardMerge.cpp.
ExperimentResult merge_search_shards(const std::string& run_dir);

}  // namespace hpctrain
