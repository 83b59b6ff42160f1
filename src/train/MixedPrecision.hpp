#pragma once
// Mixed precision: autocast of the forward pass to bf16 or fp16, and for fp16 dynamic loss
// scaling (LibTorch's C++ API has autocast but no gradient scaler).
//
// fp16 gradients underflow: the loss is multiplied by a scale before backward, the reduced
// gradients are divided by it before clipping and the optimizer step, and a step whose
// gradients hold inf or NaN is skipped and the scale backed off; after growth_interval
// clean steps the scale grows. Weights, gradients and optimizer state stay fp32.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "config/Config.hpp"

namespace hpctrain {

// Enables autocast for `device` to `mode` ("bf16", "fp16") for its lifetime; "fp32" does
// nothing. Nests like torch.autocast: the cast cache is cleared when the outermost ends.
class AutocastScope {
 public:
  AutocastScope(const std::string& mode, torch::DeviceType device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  torch::DeviceType device_ = torch::kCPU;
  bool was_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

struct LossScalerState {
  double scale = 1.0;
  std::int64_t growth_tracker = 0;  // clean steps since the last change of scale
  std::int64_t skipped_steps = 0;   // steps skipped for inf/NaN gradients, in total
};

class LossScaler {
 public:
  // Enabled for precision.mode fp16; otherwise every call is a no-op and scale() is 1.
  explicit LossScaler(const PrecisionConfig& config);

  // Keeps the scale, the clean-step count and the skip count as tensors on `device`,
  // updated there by ATen's AMP kernels: a step needs no host synchronization (what a
  // fused optimizer and CUDA graphs need). Call before the first step; the state carries over.
  void keep_on_device(const torch::Device& device);
  bool on_device() const { return scale_.defined(); }

  bool enabled() const { return enabled_; }
  // On the device these read it (a synchronization): for checkpoints and reports.
  double scale() const;
  LossScalerState state() const;
  // In place: tensors a captured CUDA graph reads stay where they are.
  void restore(const LossScalerState& state);

  // loss * scale (the loss itself when disabled).
  torch::Tensor scale_loss(const torch::Tensor& loss) const;
  // Divides the gradients in place by the scale and returns true when any element is inf
  // or NaN. Call it on the reduced gradients: they are equal on every rank, so every rank
  // takes the same decision without communication.
  bool unscale(const std::vector<torch::Tensor>& gradients) const;
  // The same without the decision on the host: returns the flag as a one-element float
  // tensor on the gradients' device (1 for inf/NaN), for an optimizer that skips on it.
  // Undefined when disabled.
  torch::Tensor unscale_to_flag(const std::vector<torch::Tensor>& gradients) const;
  // After a step: on inf/NaN back off (scale *= backoff_factor) and count a skipped step;
  // else grow (scale *= growth_factor) after growth_interval clean steps in a row.
  void update(bool found_inf);
  // The same from the flag of unscale_to_flag, on the device (requires keep_on_device).
  void update(const torch::Tensor& found_inf);

 private:
  bool enabled_ = false;
  PrecisionConfig config_;
  LossScalerState state_;  // on the host
  // keep_on_device: [1] float scale, [1] int32 growth tracker, [] int64 skipped steps.
  torch::Tensor scale_, growth_tracker_, skipped_;
};

}  // namespace hpctrain
