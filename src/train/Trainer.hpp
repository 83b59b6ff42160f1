#pragma once
// Synchronous data-parallel training of one model on one communicator: the loop reads
// like the algorithm (batch, forward, backward, gradient allreduce, optimizer step),
// with evaluation per epoch, early stopping and a final test evaluation.
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/Checkpoint.hpp"
#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "comm/ProcessGrid.hpp"
#include "config/Config.hpp"
#include "data/ShardedDataset.hpp"
#include "eval/Metrics.hpp"
#include "train/MetricsLog.hpp"
#include "train/MixedPrecision.hpp"
#include "train/PhaseTimer.hpp"
#include "train/StepLog.hpp"
#include "util/Files.hpp"

namespace hpctrain {

struct TrainResult {
  std::vector<EpochRecord> epochs;
  bool has_test = false;
  EvalResult test;
  std::int64_t steps = 0;
  std::int64_t samples = 0;  // global samples trained on
  double train_seconds = 0;  // this rank, training loop without evaluation
  double total_seconds = 0;
  PhaseTimer timer;  // this rank
  std::int64_t parameters = 0;
  std::size_t buckets = 0;
  bool overlap = false;
  ReducerTimes comm;        // this rank
  std::string stop_reason;  // "completed", "max_steps", "early_stopping", "target"
  // train.early_stop_restore_best: the epoch (0-based) whose weights the test evaluated
  // after an early stop (-1: the last epoch's).
  std::int64_t restored_epoch = -1;
  // train.target: reached at the end of epoch `target_epoch` (0-based), after `target_step`
  // optimizer steps, `target_train_seconds` of training and `target_wall_seconds` since the
  // loop started; `target_value` the metric's value then.
  bool target_reached = false;
  std::int64_t target_epoch = -1, target_step = 0;
  double target_value = 0, target_train_seconds = 0, target_wall_seconds = 0;
  std::string backend = "mpi";    // gradient reduction: "mpi" or "nccl"
  std::string hierarchical;       // the node-aware reduction's topology ("": flat)
  std::int64_t checkpoints = 0;   // written by this run
  double checkpoint_seconds = 0;  // their total time, gather and write (rank 0)
  double restore_seconds = 0;     // resumed: reading the checkpoint's state (rank 0)
  // Mixed precision: fp16 steps skipped for inf/NaN gradients (in total, across resumes)
  // and the loss scale at the end (1 without loss scaling).
  std::int64_t skipped_steps = 0;
  double loss_scale = 1.0;
  // fp32 and bf16: steps skipped by train.nonfinite=skip (in total, across resumes).
  std::int64_t nonfinite_skipped = 0;
  bool cuda_graphs = false;       // the steps were replayed from a captured CUDA graph
  std::string attention_backend;  // the attention kernel LibTorch took in training ("": none ran)
  // Pipeline parallelism (parallel.pipeline_stages > 1): this rank's stage, its blocks and times.
  GridLayout grid;
  int stage = 0;
  std::string stage_split;   // StagePlan::describe()
  std::string schedule;      // parallel.schedule, or "" without a pipeline
  std::string pipeline_p2p;  // parallel.p2p resolved: "nccl" or "mpi"
  std::int64_t microbatches = 1;
  std::int64_t stage_parameters = 0;  // parameters this rank holds
  double pipeline_forward = 0, pipeline_backward = 0, pipeline_wait = 0, pipeline_steps = 0;
  // The pipeline's common windows (train/Pipeline.hpp PipelineTimes): sums over settled steps.
  double pipeline_window = 0, pipeline_window_busy = 0, pipeline_skew = 0;
  std::int64_t pipeline_window_steps = 0;
  double theoretical_bubble = 0;
  // Activations this rank's pipeline held for backward (train/Pipeline.hpp PipelineMemory).
  std::int64_t activation_peak_bytes = 0, microbatch_activation_bytes = 0;
  int in_flight_peak = 0;
  // parallel.shard and what this rank held for training, measured from the tensors at the end.
  std::string shard = "none";
  bool shard_active = false;  // more than one replica to shard over
  std::int64_t parameter_bytes = 0, gradient_bytes = 0, optimizer_state_bytes = 0;
  std::int64_t gradient_bucket_peak_bytes = 0;   // parallel.shard=gradients|parameters: full buckets alive at once
  std::int64_t parameter_window_peak_bytes = 0;  // parallel.shard=parameters: gathered parameters alive at once
};

class GradientReducer;
class PipelineEngine;
class StallWatchdog;
class NonFiniteGuard;
class MasterWeights;
struct ModelImpl;
class LrSchedule;
class Milestones;
struct Batch;

class Trainer {
 public:
  // Checks the config against the data and builds model, buckets and optimizer. Local: throws the
  // same ConfigError on every rank for a bad setting (wrap in collective_check). `grid`: the ranks
  // as pipeline stages x data-parallel replicas; `data` was loaded over grid.data().
  Trainer(const Config& config, const ProcessGrid& grid, const ShardedDataset& data, MetricsLog& log);
  ~Trainer();
  // Collective over the communicator.
  TrainResult run();
  // Called on every rank after every optimizer step, with no communication in flight (a
  // scheduler serves requests from it). Must not call collectives on this communicator.
  void set_step_callback(std::function<void()> callback) { step_callback_ = std::move(callback); }
  // Checkpoints into `dir` (config.checkpoint says when), storing `resolved_json`. Arms preemption:
  // SIGTERM or SIGUSR1 writes a checkpoint at the next step and ends run() with kPreemptedExitCode.
  void enable_checkpoints(std::string dir, std::string resolved_json) {
    checkpoint_dir_ = std::move(dir);
    resolved_json_ = std::move(resolved_json);
  }
  // Without checkpoints: SIGTERM or SIGUSR1 (agreed at the next step) ends run() with a
  // CollectiveError of kPreemptedExitCode (cross-validation and search tasks).
  void stop_on_preemption() { stop_on_preemption_ = true; }
  // run.profile_steps writes PREFIX_rank<R>.json.
  void set_profile_prefix(std::string prefix) { profile_prefix_ = std::move(prefix); }
  // Continue from a verified checkpoint instead of starting fresh.
  void resume_from(CheckpointInfo info) { resume_ = std::move(info); }
  // Prefix of the epoch lines rank 0 prints ("fold 3: "), so concurrent groups can be told apart.
  void set_log_prefix(std::string prefix) { log_prefix_ = std::move(prefix); }
  LocalPredictions predict_held_out();  // this rank's predictions on its held-out rows (after run())
  const LossSpec& loss() const { return loss_; }
  // Model outputs per sample: classes, or per regression target one value or one per quantile level.
  std::int64_t output_size() const { return loss_.model_outputs(data_.meta()); }
  // The model for export: architecture config, input spec, normalization (JSON text).
  std::string model_description() const;

 private:
  struct Loop;   // one run()'s state (Trainer.cpp)
  struct Epoch;  // the epoch in progress
  LoopPosition start_run(RankState& mine);
  EpochRecord train_epoch(Loop& loop, std::int64_t index);
  void step_once(Loop& loop, Epoch& epoch, std::int64_t s);
  void load_batch(Loop& loop, const Batch& batch);
  void train_step(Loop& loop);
  void checkpoint_if_due(Loop& loop, const Epoch& epoch, std::int64_t done);
  // train.nonfinite: the epoch's figures leave skipped steps out; the device's flags are read where
  // the loop synchronizes anyway (`epoch` counts them, when given).
  void accumulate_figures(Loop& loop, bool skip, const torch::Tensor& skipped);
  void settle_nonfinite(Loop& loop, Epoch* epoch);
  void log_step(Loop& loop, Epoch& epoch, std::int64_t done);
  EpochRecord epoch_figures(Loop& loop, Epoch& epoch);
  void evaluate_epoch(Loop& loop, EpochRecord& record);
  // Early stopping, checkpoint.keep_best, train.target (train/Milestones); true: stop.
  bool after_epoch(Loop& loop, const EpochRecord& record);
  std::string write_checkpoint(Loop& loop, std::int64_t epoch, std::int64_t done, double epoch_loss,
                               std::int64_t epoch_correct, double train_seconds, bool best = false);
  EvalResult evaluate_split(const Samples& split);
  // The forward on the device under the configured autocast, output as fp32 on the CPU (metrics).
  torch::Tensor forward_to_cpu(const torch::Tensor& input);
  // parallel.*: checks the shape against the batch and the model, plans the stages and
  // builds this rank's engine (the model is whole until then).
  void build_pipeline();
  // This rank's place in the grid and the parameters and buffers it holds, for checkpoints.
  CheckpointLayout checkpoint_layout() const;
  // The grid, the schedule and this rank's pipeline times, for report.json.
  void record_parallel_figures(TrainResult& result) const;
  // A step's forward and backward over parallel.microbatches microbatches (whole model or stage):
  // the summed loss and the outputs (the last stage's; undefined elsewhere); inv_batch: 1 / batch.
  std::pair<torch::Tensor, torch::Tensor> forward_backward_microbatches(const torch::Tensor& input,
                                                                        const torch::Tensor& targets, double inv_batch);
  // parallel.shard (checked against other keys); the optimizer over `trained`, or their chunks; the one
  // a serial checkpoint saves (sharded: gathered on the first replica, collective); a resume.
  ShardStage shard_stage() const;
  std::unique_ptr<GradientReducer> make_reducer(const std::vector<torch::Tensor>& trained, NcclCommunicator* nccl,
                                                bool overlap);  // with stage 3's piece hooks
  void make_stepping_optimizer(const std::vector<torch::Tensor>& trained);
  torch::optim::Optimizer* optimizer_to_save(std::unique_ptr<torch::optim::Optimizer>& gathered);
  std::vector<torch::Tensor> reduced(const std::vector<torch::Tensor>& parameters) const;  // masters for weights
  void restore_from(const CheckpointInfo& info, RankState& mine);
  // Gradient clipping over the global norm of every stage's (reduced) gradients.
  void clip_gradients(double max_norm);
  // Figures only the last stage computes (loss, accuracy, evaluation), copied to its replica's stages.
  void from_last_stage(std::vector<double>& values) const;
  const Config& config_;
  const ProcessGrid& grid_;
  const Communicator& comm_;  // data parallel: this stage's replicas (all ranks with one stage)
  const ShardedDataset& data_;
  MetricsLog& log_;
  std::int64_t per_epoch_ = 0;
  std::int64_t total_steps_ = 0;
  std::shared_ptr<ModelImpl> model_;
  std::string backend_ = "mpi";  // the gradient reduction: "mpi" or "nccl"
  bool overlap_ = false;
  std::unique_ptr<NcclCommunicator> nccl_;    // before reducer_: outlives it
  std::unique_ptr<PipelineEngine> pipeline_;  // with parallel.pipeline_stages > 1
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<Milestones> milestones_;
  LossSpec loss_;
  std::function<void()> step_callback_;
  std::string log_prefix_;
  std::string checkpoint_dir_;
  std::string profile_prefix_;
  bool stop_on_preemption_ = false;
  torch::Device device_{torch::kCPU};  // compute_device() when constructed
  LossScaler scaler_;
  NonFiniteGuard* nonfinite_ = nullptr;  // the running loop's (train.nonfinite)
  // comm.timeout: made at the first step (collective), watching until the loop ends.
  std::unique_ptr<StallWatchdog> watchdog_;
  // Marks point `point` (StallWatchdog::Point) of step `step` for the watchdog, if any.
  void watch(std::int64_t step, int point);
  // After the gradient reduction: the fp16 unscale and skip, train.nonfinite, clipping, the step.
  // Returns whether the host skipped it, and the device's skip flag (fused optimizer; else undefined).
  std::pair<bool, torch::Tensor> optimizer_step(std::int64_t step);
  // The fused optimizer steps without host waits; loss scaling and clipping stay on the device too.
  bool device_side_ = false, graphs_ = false;
  std::unique_ptr<MasterWeights> masters_;  // precision.params=low
  std::string resolved_json_;
  std::optional<CheckpointInfo> resume_;
  double restore_seconds_ = 0;
};

}  // namespace hpctrain
