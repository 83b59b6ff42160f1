#pragma once
// The training loop's checkpoints (docs/checkpoints.md): when one is due, the agreement on
// preemption signals across ranks, writing and pruning, and the one way a preempted run
// ends. CheckpointSchedule decides from figures alone (no clock, no MPI; unit-tested);
// Checkpointer feeds it what the ranks agreed on and writes through checkpoint/Checkpoint.
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "checkpoint/Checkpoint.hpp"
#include "comm/Communicator.hpp"
#include "config/Config.hpp"

namespace hpctrain {

// What every rank knows after a step, from one small reduction: the preemption signal any
// rank recorded (0: none), and whether checkpoint.every_minutes have passed since the last
// checkpoint by rank 0's clock (the ranks' clocks differ; rank 0's decides).
struct StepAgreement {
  int signal = 0;
  bool minutes_passed = false;
};

// What to do after a step: write a checkpoint, and (signal != 0) stop for preemption.
struct CheckpointDecision {
  bool write = false;
  int signal = 0;
  bool stop() const { return signal != 0; }
};

class CheckpointSchedule {
 public:
  // `writes`: the run writes checkpoints; `stops_on_preemption`: without checkpoints, a
  // signal still ends the run (cross-validation and search tasks). `start_step`: the optimizer
  // steps done when the run started (a resumed checkpoint's step, else 0).
  CheckpointSchedule(const CheckpointConfig& config, bool writes, bool stops_on_preemption, std::int64_t start_step);
  // The ranks agree after every step (signals, clock) only when something depends on it.
  bool armed() const { return writes_ || stops_; }
  // The clock matters (checkpoint.every_minutes with checkpoints).
  bool timed() const { return writes_ && every_minutes_ > 0; }
  bool minutes_passed(double seconds_since_last) const;
  // After the step that made `step` optimizer steps in all (resumed ones included, so
  // checkpoint.every_steps counts the same whether or not the run was interrupted).
  CheckpointDecision after_step(std::int64_t step, const StepAgreement& agreed) const;
  // When training ends at `step`, before the final test (checkpoint.at_end): not when the
  // run made no step since it started (a resumed run that had nothing left to do).
  bool due_at_end(std::int64_t step) const;

 private:
  std::int64_t every_steps_;
  double every_minutes_;
  bool at_end_;
  bool writes_;
  bool stops_;
  std::int64_t start_step_;
};

// The error every rank throws for a preemption signal agreed at `step`, exit code
// kPreemptedExitCode; `checkpoint` is the file just written ("": none, the run did not
// checkpoint).
CollectiveError preemption_error(int signal, std::int64_t step, const std::string& checkpoint);

// checkpoint.keep_best's file in the checkpoint folder: not a step_*.h5, so never pruned
// nor taken by checkpoint.resume=auto.
inline constexpr const char* kBestCheckpointName = "best.h5";

class Checkpointer {
 public:
  // Checkpoints go into `dir` ("": none) with the resolved config `config_json` and the model
  // description `model_json` (for export). Construction starts checkpoint.every_minutes' clock.
  // `group` is every rank of the grid, `layout` this rank's place in it and its pieces.
  Checkpointer(const CheckpointConfig& config, const Communicator& group, CheckpointLayout layout, std::string dir,
               std::string config_json, std::string model_json, bool stops_on_preemption, std::int64_t start_step);
  // Collective when armed (one 2-value MPI_Allreduce): call on every rank after every
  // optimizer step, with no communication in flight.
  CheckpointDecision after_step(std::int64_t step);
  bool due_at_end(std::int64_t step) const { return schedule_.due_at_end(step); }
  // Collective: writes the checkpoint of the loop at `position` with this rank's epoch sums,
  // then prunes to checkpoint.keep. Returns its path. `optimizer` as save_checkpoint takes it.
  // `best`: writes kBestCheckpointName (checkpoint.keep_best) the same way instead, and prunes nothing.
  // `sharded` (not null): every rank writes its slices in parallel (save_checkpoint_parallel)
  // and `optimizer` is unused.
  std::string write(const LoopPosition& position, double epoch_loss, std::int64_t epoch_correct,
                    torch::nn::Module& model, torch::optim::Optimizer* optimizer, bool best = false,
                    const ShardedCheckpointState* sharded = nullptr);
  std::int64_t written() const { return written_; }
  double seconds() const { return seconds_; }  // gather and write, rank 0's clock on rank 0

 private:
  CheckpointSchedule schedule_;
  const Communicator& comm_;
  CheckpointLayout layout_;
  std::string dir_;
  std::string config_json_;
  std::string model_json_;
  std::int64_t keep_;
  double last_;  // when the last checkpoint was written (or the run started)
  std::int64_t written_ = 0;
  double seconds_ = 0;
};

}  // namespace hpctrain
