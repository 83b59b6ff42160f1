#pragma once
// Checkpoints: everything the rest of a run depends on, in one HDF5 file that rank 0
// writes atomically (temporary file, checked close, fsync, rename, fsync of the folder:
// util/Files.hpp) with a SHA-256 over its contents
// (docs/checkpoints.md). Parameters and optimizer state are the same on every rank of a
// data-parallel group; batch-norm statistics, the dropout generator and the epoch's
// running sums are per rank and are gathered.
#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

inline constexpr const char* kCheckpointFormat = "hpctrain-checkpoint";
inline constexpr std::int64_t kCheckpointVersion = 1;

// Where the training loop stands.
struct LoopPosition {
  std::int64_t epoch = 0;                                 // the epoch in progress, or the next one
  std::int64_t step_in_epoch = 0;                         // optimizer steps of that epoch done
  std::int64_t step = 0;                                  // optimizer steps done in all
  double best = std::numeric_limits<double>::infinity();  // early stopping (lower is better)
  std::int64_t epochs_without_improvement = 0;
  double train_seconds = 0;        // training time so far (this rank's, as in report.json)
  std::int64_t samples = 0;        // global samples trained on so far
  std::string epochs_json = "[]";  // the epoch records so far, as in report.json
  // fp16 dynamic loss scaling (precision.mode fp16; 0: none recorded).
  double loss_scale = 0;
  std::int64_t loss_scale_growth_tracker = 0;
  std::int64_t skipped_steps = 0;
};

// This rank's own part.
struct RankState {
  torch::Tensor rng;      // CPU generator state (dropout)
  double epoch_loss = 0;  // the epoch in progress: summed per-sample loss
  std::int64_t epoch_correct = 0;
};

struct CheckpointInfo {
  std::string path;
  std::int64_t step = 0;
  std::int64_t world_size = 0;
  std::string config_json;
  std::string model_json;
  LoopPosition position;
};

// Collective over `comm`: gathers every rank's buffers and RankState; rank 0 writes `path`.
// `model_json` describes the model for export (docs/checkpoints.md, "Export").
void save_checkpoint(const std::string& path, const std::string& config_json, const std::string& model_json,
                     const LoopPosition& position, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                     const RankState& mine, const Communicator& comm);

// Reads and verifies `path` (every dataset against the stored SHA-256); throws DataError
// naming the file and what is wrong (missing, truncated, checksum mismatch).
CheckpointInfo verify_checkpoint(const std::string& path);

// Restores parameters, optimizer state and this rank's buffers and RankState from a
// verified checkpoint. With the writer's world size every rank takes its own part (an exact
// resume); with another, every rank takes rank 0's buffers and `mine.rng` is left as it is.
void restore_checkpoint(const CheckpointInfo& info, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                        RankState& mine, const Communicator& comm);

// The model's parameters and buffers by name (module order, parameters first), for
// export: float buffers are the mean over the ranks that wrote the checkpoint (as
// evaluation averages them), others rank 0's.
std::vector<std::pair<std::string, torch::Tensor>> checkpoint_state_dict(const CheckpointInfo& info);

// Checkpoint files (step_NNNNNNNNNN.h5) in `dir`, newest first.
std::vector<std::string> list_checkpoints(const std::string& dir);
// After `newest` was written: reads it back and verifies its checksum (verify_checkpoint),
// then deletes the checkpoints in `dir` older than it beyond the newest `keep` (counting
// `newest`), each deletion checked, and fsyncs `dir`. When `newest` does not verify it
// throws before deleting anything, so older good checkpoints stay. Files that sort after
// `newest` (newer steps that a resume skipped as corrupt) are left alone: they never count
// against `keep`, so a good checkpoint is never deleted in their favour.
void prune_checkpoints(const std::string& dir, std::int64_t keep, const std::string& newest);
std::string checkpoint_file_name(std::int64_t step);

}  // namespace hpctrain
