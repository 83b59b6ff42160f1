#include "train/Checkpointer.hpp"

#include "launch/Signals.hpp"
#include "train/Optimizers.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

CheckpointSchedule::CheckpointSchedule(const CheckpointConfig& config, bool writes, bool stops_on_preemption,
                                       std::int64_t start_step)
    : every_steps_(config.every_steps),
      every_minutes_(config.every_minutes),
      at_end_(config.at_end),
      writes_(writes),
      stops_(stops_on_preemption),
      start_step_(start_step) {}

bool CheckpointSchedule::minutes_passed(double seconds_since_last) const {
  return timed() && seconds_since_last >= 60.0 * every_minutes_;
}

CheckpointDecision CheckpointSchedule::after_step(std::int64_t step, const StepAgreement& agreed) const {
  CheckpointDecision decision;
  if (!armed()) return decision;
  decision.signal = agreed.signal;
  // With checkpoints a preempted run writes one before it stops.
  decision.write = writes_ && ((every_steps_ > 0 && step % every_steps_ == 0) || (timed() && agreed.minutes_passed) ||
                               agreed.signal != 0);
  return decision;
}

bool CheckpointSchedule::due_at_end(std::int64_t step) const {
  return writes_ && at_end_ && step > start_step_;
}

CollectiveError preemption_error(int signal, std::int64_t step, const std::string& checkpoint) {
  std::string message = std::string("preempted by ") + signal_name(signal) + " at step " + std::to_string(step);
  if (!checkpoint.empty()) {
    message += ": checkpoint " + checkpoint + " written; run again with checkpoint.resume=auto to go on";
  }
  return CollectiveError(message, 0, kPreemptedExitCode);
}

Checkpointer::Checkpointer(const CheckpointConfig& config, const Communicator& group, CheckpointLayout layout,
                           std::string dir, std::string config_json, std::string model_json, bool stops_on_preemption,
                           std::int64_t start_step)
    : schedule_(config, !dir.empty(), stops_on_preemption, start_step),
      comm_(group),
      layout_(std::move(layout)),
      dir_(std::move(dir)),
      config_json_(std::move(config_json)),
      model_json_(std::move(model_json)),
      keep_(config.keep),
      last_(wall_seconds()) {}

CheckpointDecision Checkpointer::after_step(std::int64_t step) {
  if (!schedule_.armed()) return {};
  // Every rank must take the same decision: the step count is the same everywhere, while
  // the signals and the clock are agreed with one small reduction.
  double flags[2] = {static_cast<double>(preemption_signal()),
                     comm_.rank() == 0 && schedule_.minutes_passed(wall_seconds() - last_) ? 1.0 : 0.0};
  if (comm_.size() > 1) comm_.allreduce_max(flags, 2);
  return schedule_.after_step(step, StepAgreement{static_cast<int>(flags[0]), flags[1] != 0});
}

std::string Checkpointer::write(const LoopPosition& position, double epoch_loss, std::int64_t epoch_correct,
                                torch::nn::Module& model, torch::optim::Optimizer* optimizer, bool best,
                                const ShardedCheckpointState* sharded) {
  if (optimizer != nullptr && sharded == nullptr)
    synchronize_optimizer_state(*optimizer);  // steps counted on the device
  RankState mine;
  mine.rng = at::detail::getDefaultCPUGenerator().get_state();
  mine.epoch_loss = epoch_loss;
  mine.epoch_correct = epoch_correct;
  const std::string path = dir_ + "/" + (best ? std::string(kBestCheckpointName) : checkpoint_file_name(position.step));
  const double t0 = wall_seconds();
  collective_check(comm_, [&] {
    if (sharded != nullptr) {
      save_checkpoint_parallel(path, config_json_, model_json_, position, model, *sharded, mine, comm_, layout_);
    } else {
      save_checkpoint(path, config_json_, model_json_, position, model, optimizer, mine, comm_, layout_);
    }
    // Read back and verified like the rolling ones (prune_checkpoints verifies before it deletes);
    // written in parallel, every rank has read its slices back: the structure is left to check.
    const bool verified = sharded != nullptr;
    if (comm_.rank() == 0 && best) verify_checkpoint(path, !verified);
    if (comm_.rank() == 0 && !best) prune_checkpoints(dir_, keep_, path, verified);
  });
  last_ = wall_seconds();
  written_ += 1;
  seconds_ += last_ - t0;
  return path;
}

}  // namespace hpctrain
