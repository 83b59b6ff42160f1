#pragma once
// train.nonfinite: what a step does whose loss or gradients hold NaN or Inf (fp32 and bf16;
// fp16 steps with such gradients are skipped by the loss scaler, train/MixedPrecision).
//
// Every rank must take the same decision, and the step should not pay a collective for it.
// A rank whose loss is not finite seeds its backward with NaN (mark_loss), so its gradients
// turn NaN and the gradient reduction itself carries the fact to every replica: afterwards
// all ranks of the data axis hold the same gradients and find the same flag (found_in).
// Pipeline stages hold different gradients; the trainer agrees their flags with the one
// allreduce over the stages that fp16 already needs, so the whole group decides together.
//
// With the decision on the host (the plain optimizers) the flagged step is skipped or the
// run aborts at once (decide). The fused optimizer skips on the device flag without a host
// synchronization; its flags are summed on the device (add) and the policy is applied where
// the loop synchronizes anyway: at log steps, checkpoints and epoch ends (settle).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config/Config.hpp"

namespace hpctrain {

class NonFiniteGuard {
 public:
  // `active`: the policy applies (precision.mode is not fp16). `skipped_before`: steps a
  // resumed checkpoint had skipped already (they count towards train.nonfinite_limit);
  // `start_step`: the steps done before this run.
  NonFiniteGuard(const TrainConfig& config, bool active, std::int64_t skipped_before, std::int64_t start_step);

  bool active() const { return active_; }
  bool skips() const { return skip_; }
  // The loss to call backward on: `loss` itself (multiplied by exactly 1), or with a NaN
  // backward seed when it is not finite.
  torch::Tensor mark_loss(const torch::Tensor& loss) const;
  // One-element float tensor on the gradients' device: 1 when any element is inf or NaN.
  // Undefined when inactive or without gradients.
  torch::Tensor found_in(const std::vector<torch::Tensor>& gradients) const;

  // Host decision for step `step` (1-based, the step being taken): false for a finite step;
  // true for a step to skip (counted); throws a CollectiveError for abort or past the limit.
  bool decide(bool nonfinite, std::int64_t step);
  // Device decision: the optimizer skipped on `flag`; it is summed on the device.
  void add(const torch::Tensor& flag);
  // Reads the device sum (a synchronization) after `step` steps and applies the policy to
  // the steps flagged since the last settle: returns how many were skipped, or throws.
  std::int64_t settle(std::int64_t step);

  // Steps skipped in total, across resumes (as of the last decide or settle).
  std::int64_t skipped_steps() const { return skipped_; }
  const std::string& policy() const { return policy_; }
  std::int64_t limit() const { return limit_; }

 private:
  // Throws when `count` new non-finite steps, the latest between `first` and `last`, end the run.
  void apply(std::int64_t count, std::int64_t first, std::int64_t last);

  bool active_ = false;
  bool skip_ = false;
  std::string policy_;
  std::int64_t limit_ = 0;
  std::int64_t skipped_ = 0;
  std::int64_t settled_step_ = 0;  // device decisions: steps covered by the last settle
  torch::Tensor flags_;            // device decisions: flagged steps since the last settle
};

}  // namespace hpctrain
