#pragma once
// One task of a cross-validation or search: train one configuration on one group of
// ranks on one split of the training data (a fold, or the validation holdout), then
// predict the held-out rows and score them. Collective over the group.
#include <cstdint>

#include "comm/ProcessGrid.hpp"
#include "config/Config.hpp"
#include "data/Sampling.hpp"
#include "experiment/TaskOutcome.hpp"

namespace hpctrain {

class ShardedDataset;
class GroupScheduler;

struct FoldTask {
  int trial = 0;
  int repeat = 0;
  int fold = -1;  // -1: the validation holdout
  std::int64_t epochs = 0;
  bool in_search = false;        // names the trial in progress lines
  bool keep_predictions = true;  // send the held-out predictions to rank 0 (cv.save_predictions)
};

// Runs `task` with `config` on `grid` (a group of ranks as pipeline stages x replicas; the
// data's shards over its replicas), training on split.train and scoring split.validation.
// Returns the outcome on the group's leader (docs/cv-and-search.md, "task outcome"; other
// ranks get only the task's identity); a failure that every rank of the group agrees on (a
// bad setting for this trial, a diverging loss) becomes an outcome with status failed and
// its message, a preemption one with status preempted. The scheduler is polled between
// training steps.
TaskOutcome run_fold_task(const FoldTask& task, const Config& config, ShardedDataset& data, const TrainValSplit& split,
                          const ProcessGrid& grid, GroupScheduler& scheduler, int group_index);

}  // namespace hpctrain
