#pragma once
// Checkpoints: everything the rest of a run depends on, in one HDF5 file that the grid's
// first rank writes atomically (temporary file, checked close, fsync, rename, fsync of the
// folder: util/Files.hpp) with a SHA-256 over its contents (docs/checkpoints.md).
//
// The file holds the whole model whatever the layout that wrote it: parameters and
// optimizer state are the same on every replica, so each pipeline stage's first replica
// sends its pieces; batch-norm statistics are per replica, the dropout generator and the
// epoch's running sums per rank, and are gathered. Any layout reads any file: on the
// writer's grid every rank takes its own part (an exact resume), on another each takes its
// pieces' parameters and the first replica's statistics.
#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

inline constexpr const char* kCheckpointFormat = "hpctrain-checkpoint";
inline constexpr std::int64_t kCheckpointVersion = 1;
// Written in parallel (save_checkpoint_parallel): the same datasets, the checksum over parts.
inline constexpr std::int64_t kCheckpointVersionParts = 2;

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

// Where a rank sits in the grid that writes or reads a checkpoint, and which of the model's
// parameters and buffers (module order) it holds: all of them without a pipeline, its
// stages' pieces with one.
struct CheckpointLayout {
  int stages = 1;
  int replicas = 1;
  int stage = 0;
  int replica = 0;
  std::vector<bool> parameters;  // empty: all
  std::vector<bool> buffers;     // empty: all
  // The pipeline's stage boundaries as parallel.stage_split lists them (empty: no pipeline).
  std::vector<std::int64_t> stage_split;

  bool holds_parameter(std::size_t i) const { return parameters.empty() || parameters[i]; }
  bool holds_buffer(std::size_t i) const { return buffers.empty() || buffers[i]; }
  // Plain data parallelism: one stage, each rank of `comm` a replica with the whole model.
  static CheckpointLayout data_parallel(const Communicator& comm);
};

struct CheckpointInfo {
  std::string path;
  std::int64_t step = 0;
  std::int64_t world_size = 0;  // ranks of the grid that wrote it = stages x replicas
  std::int64_t stages = 1;
  std::int64_t replicas = 0;
  std::vector<std::int64_t> stage_split;  // the writer's pipeline boundaries (empty: none)
  std::string config_json;
  std::string model_json;
  LoopPosition position;

  // Read on the writer's grid: every rank's own state is there.
  bool same_layout(const CheckpointLayout& layout) const {
    return stages == layout.stages && replicas == layout.replicas;
  }
  std::string describe_layout() const;  // "4 ranks (2 stages x 2 replicas)"
};

// Collective over `group`, every rank of the grid described by `layout`: gathers the
// stages' parameters and optimizer state and every rank's buffers and RankState; the
// group's rank 0 writes `path`. `model_json` describes the model for export
// (docs/checkpoints.md, "Export"). `optimizer` holds the state of the parameters `layout`
// holds; only each stage's first replica sends it, the others may pass nullptr.
void save_checkpoint(const std::string& path, const std::string& config_json, const std::string& model_json,
                     const LoopPosition& position, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const RankState& mine, const Communicator& group, const CheckpointLayout& layout);

// A rank's piece of a parameter or of its optimizer state, for checkpoints written in
// parallel: elements [begin, begin + values.numel()) of the tensor in C order.
struct CheckpointSlice {
  std::size_t parameter = 0;  // module order
  std::string key;            // "": the parameter; else its optimizer state key ("exp_avg", ...)
  std::int64_t begin = 0;
  torch::Tensor values;  // float32, 1-D, contiguous, on the CPU
};

// What a rank of a sharded run (parallel.shard) contributes to a checkpoint written in
// parallel. Over the replicas of a stage, the slices hold every element of the stage's
// parameters and of their optimizer state exactly once.
struct ShardedCheckpointState {
  std::vector<CheckpointSlice> slices;
  // Per parameter this rank's stage holds: the optimizer state keys besides "step" (in
  // optimizer_state_keys order; none before the first step), and the step count if any.
  std::map<std::size_t, std::vector<std::string>> state_keys;
  std::map<std::size_t, std::int64_t> steps;
};

// Collective over `group`, as save_checkpoint, and the same file but for the checksum
// (format version 2: SHA-256 per part, docs/checkpoints.md): the group's rank 0 builds the
// file's structure and small datasets (position, buffers, generators) in memory and writes
// them; every rank writes its slices into the same temporary file at their places, fsyncs it
// and reads its slices back to verify them; then rank 0 renames the file into place.
// No rank gathers the parameters or the optimizer state.
void save_checkpoint_parallel(const std::string& path, const std::string& config_json, const std::string& model_json,
                              const LoopPosition& position, torch::nn::Module& model,
                              const ShardedCheckpointState& state, const RankState& mine, const Communicator& group,
                              const CheckpointLayout& layout);

// Reads and verifies `path` (every dataset against the stored SHA-256); throws DataError
// naming the file and what is wrong (missing, truncated, checksum mismatch). `data` false:
// only the structure (format, manifest, and for version 2 the parts table against the stored
// checksum), when the data was verified already (by rank 0 before a resume, by the writers).
CheckpointInfo verify_checkpoint(const std::string& path, bool data = true);

// Restores the parameters and optimizer state `layout` holds, and this rank's buffers and
// RankState, from a verified checkpoint. Throws ConfigError when the model differs. On the
// writer's grid (same stages and replicas) every rank takes its own part: an exact resume.
// With as many replicas, each takes its replica's buffers; otherwise the first replica's.
// On another grid `mine` is left as it is.
// `optimizer` null: the parameters only (a sharded run reads its chunks of the state with
// CheckpointReader).
void restore_checkpoint(const CheckpointInfo& info, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                        RankState& mine, const CheckpointLayout& layout);

// Parts of a verified checkpoint's parameters and optimizer state, for a sharded run that
// reads only its chunks of the state.
class CheckpointReader {
 public:
  explicit CheckpointReader(const CheckpointInfo& info);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;
  // Elements [begin, begin + out.numel()) in C order of parameter `parameter` (`key` "") or
  // of its optimizer state `key`, into `out` (float32, contiguous, on the CPU). False when
  // the checkpoint has no such state (a parameter before its first step).
  bool read(std::size_t parameter, const std::string& key, std::int64_t begin, torch::Tensor out) const;
  // The optimizer's step count of `parameter` (Adam, AdamW); -1: none.
  std::int64_t step(std::size_t parameter) const;

 private:
  struct File;
  std::unique_ptr<File> file_;
};

// The model's parameters and buffers by name (module order, parameters first), for
// export: float buffers are the mean over the replicas that wrote the checkpoint (as
// evaluation averages them), others the first replica's.
std::vector<std::pair<std::string, torch::Tensor>> checkpoint_state_dict(const CheckpointInfo& info);

// Checkpoint files (step_NNNNNNNNNN.h5) in `dir`, newest first.
std::vector<std::string> list_checkpoints(const std::string& dir);
// After `newest` was written: reads it back and verifies its checksum (verify_checkpoint),
// then deletes the checkpoints in `dir` older than it beyond the newest `keep` (counting
// `newest`), each deletion checked, and fsyncs `dir`. When `newest` does not verify it
// throws before deleting anything, so older good checkpoints stay. Files that sort after
// `newest` (newer steps that a resume skipped as corrupt) are left alone: they never count
// against `keep`, so a good checkpoint is never deleted in their favour.
// `verified`: the writers read `newest` back and verified its data already (parallel
// writes); only its structure is checked here.
void prune_checkpoints(const std::string& dir, std::int64_t keep, const std::string& newest, bool verified = false);
std::string checkpoint_file_name(std::int64_t step);

}  // namespace hpctrain
