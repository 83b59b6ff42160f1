#include "train/MixedPrecision.hpp"

#include <ATen/autocast_mode.h>

namespace hpctrain {

AutocastScope::AutocastScope(const std::string& mode, torch::DeviceType device) : device_(device) {
  if (mode == "fp32") return;
  active_ = true;
  was_enabled_ = at::autocast::is_autocast_enabled(device_);
  previous_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_dtype(device_, mode == "fp16" ? at::kHalf : at::kBFloat16);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, was_enabled_);
  at::autocast::set_autocast_dtype(device_, previous_dtype_);
}

LossScaler::LossScaler(const PrecisionConfig& config) : enabled_(config.mode == "fp16"), config_(config) {
  state_.scale = enabled_ ? config.init_scale : 1.0;
}

torch::Tensor LossScaler::scale_loss(const torch::Tensor& loss) const {
  return enabled_ ? loss * state_.scale : loss;
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& gradients) const {
  if (!enabled_ || gradients.empty()) return false;
  // One fused pass per device: multiplies by 1/scale and flags any non-finite element.
  const auto device = gradients.front().device();
  auto found_inf = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat).device(device));
  const auto inv_scale = torch::full({1}, 1.0 / state_.scale, torch::TensorOptions().dtype(torch::kFloat).device(device));
  at::_amp_foreach_non_finite_check_and_unscale_(gradients, found_inf, inv_scale);
  return found_inf.item<float>() != 0.0F;
}

void LossScaler::update(bool found_inf) {
  if (!enabled_) return;
  if (found_inf) {
    state_.scale *= config_.backoff_factor;
    state_.growth_tracker = 0;
    state_.skipped_steps += 1;
    return;
  }
  if (++state_.growth_tracker >= config_.growth_interval) {
    state_.scale *= config_.growth_factor;
    state_.growth_tracker = 0;
  }
}

}  // namespace hpctrain
