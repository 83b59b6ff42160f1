// Trainer::run: the training loop (epochs, steps, evaluation, early stopping, checkpoints, final test).
// Trainer.cpp builds the trainer and evaluates; StepLog logs, Checkpointer decides and writes checkpoints.
#include "train/Trainer.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>

#include "comm/GradientReducer.hpp"
#include "comm/StallWatchdog.hpp"
#include "config/MetricCatalog.hpp"
#include "data/BatchPipeline.hpp"
#include "data/Sampling.hpp"
#include "models/Attention.hpp"
#include "models/Model.hpp"
#include "models/SoftmaxCrossEntropy.hpp"
#include "train/Checkpointer.hpp"
#include "train/Device.hpp"
#include "train/MasterWeights.hpp"
#include "train/Milestones.hpp"
#include "train/NonFinite.hpp"
#include "train/Optimizers.hpp"
#include "train/Pipeline.hpp"
#include "train/Profiler.hpp"
#include "train/Schedule.hpp"
#include "train/ShardedState.hpp"
#include "train/StepGraph.hpp"
#include "train/StepLog.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"
#include "util/Random.hpp"

namespace hpctrain {
namespace json = boost::json;

namespace {

// The batch's summed loss, in float32 whatever the autocast: on a GPU with model.fused_kernels
// a cross-entropy is hpctrain's kernel, which reads the logits in their own type
// (models/SoftmaxCrossEntropy.hpp); otherwise eval's loss on float32 logits.
torch::Tensor batch_loss_sum(const LossSpec& loss, const torch::Tensor& logits, const torch::Tensor& targets,
                             bool fused_kernels) {
  if (fused_kernels && loss.kind == LossKind::CrossEntropy && logits.is_cuda()) {
    return softmax_cross_entropy_sum(logits, targets);  // ATen's cross_entropy where the kernel does not apply
  }
  return loss_sum(loss, logits.to(torch::kFloat), targets);
}
// Eager steps before the capture of device.cuda_graphs (torch's examples use 3 to 11).
constexpr int kGraphWarmupSteps = 3;

// Every rank of the communicator sees the same reduced value, so all throw together.
void check_finite(double loss, std::int64_t step) {
  if (std::isfinite(loss)) return;
  throw CollectiveError("training diverged: the loss is " + std::string(std::isnan(loss) ? "NaN" : "infinite") +
                            " at step " + std::to_string(step) +
                            " (lower optimizer.lr, set train.grad_clip_norm, or check the data)",
                        0, 1);
}
}  // namespace

// One run()'s state: where it started and stands, its figures, what lives as long as the loop.
struct Trainer::Loop {
  Loop(Trainer& trainer, const LoopPosition& from, const RankState& resumed);
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  const LoopPosition at;  // where this run started: a checkpoint's position, or the beginning
  const RankState mine;   // this rank's part of that checkpoint (the epoch's sums)
  TrainResult result;
  const Range slice;  // this rank's rows of each global batch
  const double inv_batch;
  BatchPipeline pipeline;
  StepLog log;
  const double start;
  StepClock clock;    // on a GPU the phases are timed with events on the compute stream (no wait per phase)
  CopyFences copied;  // the pipeline's two pinned input buffers: refilled only once their copy has run
  StepProfiler profiler;
  std::int64_t step;  // optimizer steps done
  double best;        // early stopping
  std::int64_t epochs_without_improvement;
  double carried_seconds = 0;  // training time of the epoch in progress before the checkpoint
  const bool same_layout;      // on the grid that wrote the resumed checkpoint (or not resumed)
  Checkpointer checkpointer;
  // With device.cuda_graphs every tensor the step touches lives across steps: the inputs
  // are copied into fixed buffers, the outputs and the epoch's sums stay where they are.
  std::unique_ptr<StepGraph> graph;
  torch::Tensor input, targets, logits, local_sum;
  torch::Tensor epoch_loss, correct;  // per-step figures stay on the device; .item() only at log steps
  // train.nonfinite (made at the first step): the policy, and the steps it skipped.
  std::unique_ptr<NonFiniteGuard> nonfinite;
  // comm.timeout: the watchdog stops watching when the loop ends, however it ends.
  StallWatchdog::DisarmAtEnd watch_end;
};

// The epoch in progress.
struct Trainer::Epoch {
  std::int64_t index = 0;
  double start = 0;           // wall clock at its start
  std::int64_t first = 0;     // its first step: after a resume, the steps the checkpoint had done
  std::int64_t steps = 0;     // its steps (fewer than per epoch when train.max_steps ends it)
  double seconds_before = 0;  // training time of the run before it
  double lr = 0;              // the learning rate of its latest step
  std::int64_t skipped = 0;   // its steps skipped by train.nonfinite in this run
};

Trainer::Loop::Loop(Trainer& t, const LoopPosition& from, const RankState& resumed)
    : at(from),
      mine(resumed),
      slice(batch_slice(t.config_.train.batch_size, t.comm_.size(), t.comm_.rank())),
      inv_batch(1.0 / static_cast<double>(t.config_.train.batch_size)),
      // Pipeline stages after the first never read the inputs: none are prepared there.
      pipeline(t.data_, t.config_.data, static_cast<std::uint64_t>(t.config_.train.seed), slice.size(),
               t.device_.is_cuda(), !t.pipeline_ || t.grid_.first_stage()),
      log(t.log_, t.config_.run, t.grid_.group().rank() == 0, t.total_steps_, t.log_prefix_),
      start(wall_seconds()),
      clock(result.timer, t.device_),
      copied(t.device_, 2),
      profiler(t.config_.run.profile_start, t.profile_prefix_.empty() ? 0 : t.config_.run.profile_steps,
               t.profile_prefix_ + "_rank" + std::to_string(t.comm_.rank()) + ".json", t.device_.is_cuda()),
      step(from.step),
      best(from.best),
      epochs_without_improvement(from.epochs_without_improvement),
      same_layout(!t.resume_ || t.resume_->same_layout(t.checkpoint_layout())),
      checkpointer(t.config_.checkpoint, t.grid_.group(), t.checkpoint_layout(), t.checkpoint_dir_, t.resolved_json_,
                   t.checkpoint_dir_.empty() ? std::string() : t.model_description(), t.stop_on_preemption_, from.step),
      epoch_loss(torch::zeros({}, torch::dtype(torch::kDouble).device(t.device_))),
      correct(torch::zeros({}, torch::dtype(torch::kLong).device(t.device_))) {
  result.parameters = parameter_count(*t.model_);
  result.buckets = t.reducer_->bucket_count();
  result.backend = t.backend_;
  if (const HierarchicalSum* h = t.reducer_->hierarchical()) result.hierarchical = h->describe();
  result.overlap = t.reducer_->overlapping();
  result.samples = from.samples;
  const json::value past_records = json::parse(from.epochs_json);
  for (const auto& e : past_records.as_array()) {
    result.epochs.push_back(epoch_record_from_json(e.as_object()));
    result.train_seconds += result.epochs.back().seconds;
  }
  carried_seconds = std::max(0.0, from.train_seconds - result.train_seconds);
  result.stop_reason = "completed";
  if (t.graphs_) graph = std::make_unique<StepGraph>(t.device_, kGraphWarmupSteps);
}

TrainResult Trainer::run() {
  const TrainConfig& tc = config_.train;
  RankState mine;
  const LoopPosition at = start_run(mine);
  Loop loop(*this, at, mine);
  TrainResult& result = loop.result;
  milestones_->resumed(result.epochs, checkpoint_dir_.empty() ? "" : checkpoint_dir_ + "/" + kBestCheckpointName);
  if (config_.device.cuda_graphs && !graphs_) {
    loop.log.message("device.cuda_graphs: ignored, this run computes on the CPU");
  }
  for (std::int64_t epoch = at.epoch; epoch < tc.epochs && loop.step < total_steps_; ++epoch) {
    EpochRecord record = train_epoch(loop, epoch);
    evaluate_epoch(loop, record);
    result.epochs.push_back(record);
    loop.log.epoch(record);
    if (step_callback_) step_callback_();
    if (after_epoch(loop, record)) break;
  }
  if (result.stop_reason == "completed" && loop.step < per_epoch_ * tc.epochs) result.stop_reason = "max_steps";
  result.steps = loop.step;
  if (loop.checkpointer.due_at_end(loop.step)) {
    write_checkpoint(loop, static_cast<std::int64_t>(result.epochs.size()), 0, 0.0, 0, result.train_seconds);
  }
  result.checkpoints = loop.checkpointer.written();
  result.checkpoint_seconds = loop.checkpointer.seconds();
  result.restore_seconds = restore_seconds_;
  result.comm = reducer_->times();
  result.skipped_steps = scaler_.state().skipped_steps;
  result.loss_scale = scaler_.scale();
  result.cuda_graphs = loop.graph && loop.graph->captured();
  result.attention_backend = attention_backend_used();
  record_parallel_figures(result);
  loop.log.finish();
  if (result.stop_reason == "early_stopping") {
    WholeParameters whole(reducer_->window(), /*write_back=*/true);
    MasterWeights::Exposed exposed(masters_.get(), /*write_back=*/true);
    result.restored_epoch = milestones_->restore_best(*model_);
  }

  if (tc.test_at_end) {
    result.timer.restart();
    result.test = evaluate_split(data_.test());
    result.has_test = true;
    result.timer.mark(Phase::Eval);
    loop.log.test(result.test, data_.classification());
  }
  result.total_seconds = wall_seconds() - loop.start;
  return std::move(result);
}

// The epoch's steps, then its training figures summed over the ranks.
EpochRecord Trainer::train_epoch(Loop& loop, std::int64_t index) {
  Epoch epoch;
  epoch.index = index;
  epoch.start = wall_seconds();
  loop.result.timer.restart();
  std::vector<std::int64_t> indices;
  Samples rows = data_.epoch(index, config_.train.batch_size, comm_, &indices);
  epoch.first = index == loop.at.epoch ? loop.at.step_in_epoch : 0;
  epoch.steps = std::min(per_epoch_, total_steps_ - (loop.step - epoch.first));
  loop.pipeline.start_epoch(std::move(rows), std::move(indices), index, epoch.steps, epoch.first);
  loop.result.timer.mark(Phase::Data);
  loop.clock.start();

  loop.epoch_loss.fill_(epoch.first > 0 ? loop.mine.epoch_loss : 0.0);
  loop.correct.fill_(epoch.first > 0 ? loop.mine.epoch_correct : 0);
  epoch.seconds_before = loop.result.train_seconds;
  for (std::int64_t s = epoch.first; s < epoch.steps; ++s) step_once(loop, epoch, s);
  // The epoch ends when the GPU has run its steps.
  loop.clock.flush();
  synchronize(device_);
  return epoch_figures(loop, epoch);
}

// Step s of the epoch (counted from 0) and what follows it: checkpoint or preemption, step line.
void Trainer::step_once(Loop& loop, Epoch& epoch, std::int64_t s) {
  if (!loop.nonfinite) {
    // fp16 skips through its loss scaler, whose count the checkpoint's skipped_steps then holds.
    loop.nonfinite = std::make_unique<NonFiniteGuard>(config_.train, !scaler_.enabled(),
                                                      scaler_.enabled() ? 0 : loop.at.skipped_steps, loop.at.step);
    loop.result.nonfinite_skipped = loop.nonfinite->skipped_steps();
  }
  nonfinite_ = loop.nonfinite.get();
  if (config_.comm.timeout > 0 && grid_.group().size() > 1 && !watchdog_) {
    watchdog_ = std::make_unique<StallWatchdog>(grid_.group(), config_.comm.timeout);
  }
  loop.watch_end.watchdog = watchdog_.get();
  watch(loop.step + 1, static_cast<int>(StallWatchdog::Point::Start));
  loop.profiler.before_step(loop.step);
  // next() hands over buffer s % 2 and refills the other one, which step s - 1 read.
  loop.copied.wait(static_cast<std::size_t>((s + 1) % 2));
  const Batch host_batch = loop.pipeline.next();
  load_batch(loop, host_batch);
  loop.copied.record(static_cast<std::size_t>(s % 2));
  epoch.lr = schedule_->at(loop.step);
  set_learning_rate(*optimizer_, epoch.lr);
  // A captured step keeps its gradient buffers: autograd's (one rank, no NCCL) are replaced
  // by each replay; NCCL's buckets, which replays accumulate into, are zeroed before it.
  if (!loop.graph || !loop.graph->captured() || reducer_->bucket_count() > 0) reducer_->zero();
  loop.clock.mark(Phase::Data);

  const std::int64_t skipped_before = loop.nonfinite->skipped_steps();
  if (loop.graph) {
    // NCCL's reductions follow the graph's stream; a replay is waited for with a deadline.
    loop.graph->run([&] {
      reducer_->follow_current_stream();
      train_step(loop);
    });
    if (loop.graph->captured()) reducer_->after_replay();
    loop.clock.mark(Phase::Forward);
  } else {
    train_step(loop);
  }
  epoch.skipped += loop.nonfinite->skipped_steps() - skipped_before;  // decided on the host

  const std::string trace = loop.profiler.after_step(loop.step);
  if (!trace.empty()) loop.log.message("profile " + trace);
  ++loop.step;
  if (step_callback_) step_callback_();
  checkpoint_if_due(loop, epoch, s + 1);
  if (loop.step % config_.run.log_every == 0 || loop.step == total_steps_) log_step(loop, epoch, s + 1);
  loop.clock.mark(Phase::Data);  // bookkeeping is charged to data
}

// Pinned host batches copy to the GPU asynchronously, ordered on the compute stream.
void Trainer::load_batch(Loop& loop, const Batch& batch) {
  if (!graphs_) {
    loop.input = batch.input.to(device_, /*non_blocking=*/true);
    loop.targets = batch.targets.to(device_, /*non_blocking=*/true);
    return;
  }
  if (!loop.input.defined()) {
    loop.input = torch::empty(batch.input.sizes(), batch.input.options().device(device_).pinned_memory(false));
    loop.targets = torch::empty(batch.targets.sizes(), batch.targets.options().device(device_).pinned_memory(false));
  }
  if (batch.input.sizes() != loop.input.sizes() || batch.targets.sizes() != loop.targets.sizes()) {
    throw RuntimeFailure("device.cuda_graphs: a batch of another shape at step " + std::to_string(loop.step) +
                         " (a captured step needs equal batches)");
  }
  loop.input.copy_(batch.input, /*non_blocking=*/true);
  loop.targets.copy_(batch.targets, /*non_blocking=*/true);
}

// Forward, backward, reduction, unscaling, clipping and the optimizer step. In a graph the
// phase marks are left out (the replay is charged to forward).
void Trainer::train_step(Loop& loop) {
  auto mark_eager = [&](Phase phase) {
    if (!graphs_) loop.clock.mark(phase);
  };
  if (pipeline_ || config_.parallel.microbatches > 1) {
    // Forwards and backwards of the microbatches interleave: charged to backward (the
    // pipeline's own times split them, report.json "pipeline").
    std::tie(loop.local_sum, loop.logits) = forward_backward_microbatches(loop.input, loop.targets, loop.inv_batch);
    mark_eager(Phase::Backward);
  } else {
    {
      AutocastScope autocast(config_.precision.mode, device_.type());
      loop.logits = model_->forward(
          config_.model.channels_last ? loop.input.contiguous(torch::MemoryFormat::ChannelsLast) : loop.input);
      // Sum over local samples / global batch: the reduced sum is the global mean.
      loop.local_sum = batch_loss_sum(loss_, loop.logits, loop.targets, config_.model.fused_kernels);
    }
    auto loss = loop.local_sum * loop.inv_batch;
    mark_eager(Phase::Forward);
    loop.nonfinite->mark_loss(scaler_.scale_loss(loss)).backward();
    mark_eager(Phase::Backward);
  }
  watch(loop.step + 1, static_cast<int>(StallWatchdog::Point::Reduction));
  reducer_->finish();
  mark_eager(Phase::CommExposed);
  const auto [skip, skipped] = optimizer_step(loop.step + 1);
  mark_eager(Phase::Optimizer);
  accumulate_figures(loop, skip, skipped);
}

// The epoch's loss and correct predictions, without the steps train.nonfinite skipped.
void Trainer::accumulate_figures(Loop& loop, bool skip, const torch::Tensor& skipped) {
  if (skip) {
    loop.result.nonfinite_skipped = loop.nonfinite->skipped_steps();
    return;
  }
  torch::NoGradGuard no_grad;
  auto sum = loop.local_sum.detach().to(torch::kDouble);
  if (skipped.defined()) sum = torch::where(skipped.reshape({}) > 0, torch::zeros_like(sum), sum);
  loop.epoch_loss += sum;
  // Outputs exist on the last pipeline stage (every rank without a pipeline).
  if (data_.classification() && loop.logits.defined()) {
    auto hits = predicted_classes(loop.logits).eq(loop.targets).sum();
    if (skipped.defined()) hits = hits * (skipped.reshape({}) == 0);
    loop.correct += hits;
  }
}

// Applies train.nonfinite to the steps the device flagged since the last call (a
// synchronization: called where the loop reads the device anyway).
void Trainer::settle_nonfinite(Loop& loop, Epoch* epoch) {
  if (!loop.nonfinite) return;
  const std::int64_t count = loop.nonfinite->settle(loop.step);
  if (epoch) epoch->skipped += count;
  loop.result.nonfinite_skipped = loop.nonfinite->skipped_steps();
}

// After `done` steps of the epoch: a checkpoint when one is due, and the end of the run
// when the ranks agreed on a preemption signal (after its checkpoint, when the run has them).
void Trainer::checkpoint_if_due(Loop& loop, const Epoch& epoch, std::int64_t done) {
  const CheckpointDecision due = loop.checkpointer.after_step(loop.step);
  std::string path;
  if (due.write) {
    watch(loop.step, static_cast<int>(StallWatchdog::Point::Checkpoint));
    settle_nonfinite(loop, nullptr);  // the checkpoint holds the count
    path = write_checkpoint(loop, epoch.index, done, loop.epoch_loss.item<double>(), loop.correct.item<std::int64_t>(),
                            epoch.seconds_before + loop.carried_seconds + wall_seconds() - epoch.start);
  }
  if (due.stop()) {
    loop.log.finish();
    throw preemption_error(due.signal, loop.step, path);
  }
}

// Writes a checkpoint of the loop standing at (epoch, steps of it done), or best.h5: collective.
std::string Trainer::write_checkpoint(Loop& loop, std::int64_t epoch, std::int64_t done, double epoch_loss,
                                      std::int64_t epoch_correct, double train_seconds, bool best) {
  WholeParameters whole(reducer_->window(), /*write_back=*/false);                         // stage 3: saved whole
  MasterWeights::Exposed exposed(masters_.get(), /*write_back=*/false, optimizer_.get());  // the masters
  LoopPosition p;
  p.epoch = epoch;
  p.step_in_epoch = done;
  p.step = loop.step;
  p.best = loop.best;
  p.epochs_without_improvement = loop.epochs_without_improvement;
  p.train_seconds = train_seconds;
  p.samples = loop.result.samples;
  json::array records;
  for (const auto& r : loop.result.epochs) records.push_back(to_json(r));
  p.epochs_json = compact_json(records);
  if (scaler_.enabled()) {
    const LossScalerState scaling = scaler_.state();
    p.loss_scale = scaling.scale;
    p.loss_scale_growth_tracker = scaling.growth_tracker;
    p.skipped_steps = scaling.skipped_steps;
  } else {
    // Steps train.nonfinite skipped: they count towards the limit after a resume.
    p.skipped_steps = loop.nonfinite ? loop.nonfinite->skipped_steps() : loop.at.skipped_steps;
  }
  std::unique_ptr<torch::optim::Optimizer> gathered;  // sharded, serial: the whole state, on the first replica
  std::optional<ShardedCheckpointState> slices;       // sharded, parallel: what this rank writes
  torch::optim::Optimizer* serial = nullptr;
  if (reducer_->sharded() && config_.checkpoint.parallel_write) {
    synchronize_optimizer_state(*optimizer_);
    slices = sharded_checkpoint_state(*reducer_, *optimizer_, reduced(model_->parameters()),
                                      checkpoint_layout().parameters, comm_);
  } else {
    serial = optimizer_to_save(gathered);
  }
  const std::string path =
      loop.checkpointer.write(p, epoch_loss, epoch_correct, *model_, serial, best, slices ? &*slices : nullptr);
  loop.log.checkpoint(path);
  return path;
}

// The step line: the global batch's loss (one reduction) and the epoch's throughput so far.
void Trainer::log_step(Loop& loop, Epoch& epoch, std::int64_t done) {
  watch(loop.step, static_cast<int>(StallWatchdog::Point::LogLine));
  settle_nonfinite(loop, &epoch);
  std::vector<double> global_loss{loop.local_sum.item<double>()};
  comm_.allreduce_sum(global_loss.data(), 1);
  from_last_stage(global_loss);
  global_loss[0] *= loop.inv_batch;
  StepFigures figures;
  // A non-finite loss flags its step (train/NonFinite.hpp): with skip it was skipped.
  if (loop.nonfinite->active() && loop.nonfinite->skips()) {
    figures.skipped = !std::isfinite(global_loss[0]);
    figures.nonfinite_skipped = loop.nonfinite->skipped_steps();
  } else {
    check_finite(global_loss[0], loop.step);
  }
  const double elapsed = wall_seconds() - epoch.start;
  figures.step = loop.step;
  figures.epoch = epoch.index;
  figures.loss = global_loss[0];
  figures.lr = epoch.lr;
  figures.samples_per_s = static_cast<double>(done * config_.train.batch_size) / std::max(elapsed, 1e-9);
  figures.elapsed_s = wall_seconds() - loop.start;
  loop.log.step(figures);
}

// The epoch's training figures: its time, and its loss, accuracy and samples summed over the ranks.
EpochRecord Trainer::epoch_figures(Loop& loop, Epoch& epoch) {
  settle_nonfinite(loop, &epoch);
  EpochRecord rec;
  rec.epoch = epoch.index;
  rec.classification = data_.classification();
  rec.lr = epoch.lr;
  rec.seconds = wall_seconds() - epoch.start + (loop.same_layout ? loop.carried_seconds : 0.0);
  loop.carried_seconds = 0;
  // Samples of the epoch's steps, including those before a resume (their sums came with it).
  const std::int64_t steps = loop.same_layout ? epoch.steps : epoch.steps - epoch.first;
  const double seen = static_cast<double>(steps * loop.slice.size());
  // Skipped steps (train.nonfinite) add neither to the sums nor to the samples they average over.
  const double skipped = static_cast<double>(epoch.skipped * loop.slice.size());
  std::vector<double> sums{loop.epoch_loss.item<double>(), static_cast<double>(loop.correct.item<std::int64_t>()), seen,
                           skipped};
  comm_.allreduce_sum(sums.data(), sums.size());
  from_last_stage(sums);
  const double averaged = std::max(1.0, sums[2] - sums[3]);
  rec.train_loss = sums[0] / averaged;
  rec.train_accuracy = sums[1] / averaged;
  check_finite(rec.train_loss, loop.step);
  rec.samples_per_s = sums[2] / std::max(rec.seconds, 1e-9);
  loop.result.samples += static_cast<std::int64_t>(sums[2]);
  loop.result.train_seconds += rec.seconds;
  return rec;
}

// Validation (and with train.test_every_epoch test) figures after an epoch.
void Trainer::evaluate_epoch(Loop& loop, EpochRecord& rec) {
  loop.result.timer.restart();
  std::optional<EvalResult> val, test;
  if (!data_.split().validation.empty()) {
    val = evaluate_split(data_.validation());
    rec.val_loss = val->loss;
    rec.val_accuracy = val->accuracy;
    rec.has_validation = true;
  }
  if (config_.train.test_every_epoch) {
    test = evaluate_split(data_.test());
    rec.test_loss = test->loss;
    rec.test_accuracy = test->accuracy;
    rec.has_test = true;
  }
  milestones_->record_metrics(rec, val ? &*val : nullptr, test ? &*test : nullptr);
  loop.result.timer.mark(Phase::Eval);
  rec.train_seconds_total = loop.result.train_seconds;
}

// After an epoch: early stopping, the best epoch's checkpoint, train.target (train/Milestones).
bool Trainer::after_epoch(Loop& loop, const EpochRecord& record) {
  WholeParameters whole(milestones_->copies_weights() ? reducer_->window() : nullptr, false);  // stage 3
  MasterWeights::Exposed exposed(milestones_->copies_weights() ? masters_.get() : nullptr, false);
  const EpochVerdict v = milestones_->after_epoch(record, loop.best, loop.epochs_without_improvement, *model_);
  if (v.new_best && !checkpoint_dir_.empty()) {
    write_checkpoint(loop, record.epoch + 1, 0, 0.0, 0, loop.result.train_seconds, /*best=*/true);
  }
  TrainResult& r = loop.result;
  if ((r.target_reached = v.target_reached)) {
    std::tie(r.target_epoch, r.target_step, r.target_value) = std::tuple(record.epoch, loop.step, v.target_value);
    std::tie(r.target_train_seconds, r.target_wall_seconds) = std::pair(r.train_seconds, wall_seconds() - loop.start);
  }
  if (v.stop) r.stop_reason = v.reason;
  return v.stop;
}

}  // namespace hpctrain
