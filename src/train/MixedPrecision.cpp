#include "train/MixedPrecision.hpp"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <stdexcept>

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

void LossScaler::keep_on_device(const torch::Device& device) {
  if (!enabled_ || on_device()) return;
  const auto options = torch::TensorOptions().device(device);
  scale_ = torch::empty({1}, options.dtype(torch::kFloat));
  growth_tracker_ = torch::empty({1}, options.dtype(torch::kInt));
  skipped_ = torch::empty({}, options.dtype(torch::kLong));
  restore(state_);
}

double LossScaler::scale() const {
  return on_device() ? scale_.item<double>() : state_.scale;
}

LossScalerState LossScaler::state() const {
  if (!on_device()) return state_;
  return LossScalerState{scale_.item<double>(), growth_tracker_.item<std::int64_t>(), skipped_.item<std::int64_t>()};
}

void LossScaler::restore(const LossScalerState& state) {
  state_ = state;
  if (!on_device()) return;
  scale_.fill_(state.scale);
  // ATen's update grows the scale when the count reaches the interval exactly (the host rule:
  // at or above it); a count from a run with a longer interval would never grow it again.
  growth_tracker_.fill_(
      std::min<std::int64_t>(state.growth_tracker, std::max<std::int64_t>(0, config_.growth_interval - 1)));
  skipped_.fill_(state.skipped_steps);
}

torch::Tensor LossScaler::scale_loss(const torch::Tensor& loss) const {
  if (!enabled_) return loss;
  return on_device() ? loss * scale_.reshape(c10::IntArrayRef{}) : loss * state_.scale;
}

torch::Tensor LossScaler::unscale_to_flag(const std::vector<torch::Tensor>& gradients) const {
  if (!enabled_ || gradients.empty()) return {};
  // One fused pass per device: multiplies by 1/scale and flags any non-finite element.
  const auto options = torch::TensorOptions().dtype(torch::kFloat).device(gradients.front().device());
  auto found_inf = torch::zeros({1}, options);
  const auto inv_scale = on_device() ? scale_.reciprocal() : torch::full({1}, 1.0 / state_.scale, options);
  at::_amp_foreach_non_finite_check_and_unscale_(gradients, found_inf, inv_scale);
  return found_inf;
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& gradients) const {
  const auto found_inf = unscale_to_flag(gradients);
  return found_inf.defined() && found_inf.item<float>() != 0.0F;
}

void LossScaler::update(bool found_inf) {
  if (!enabled_) return;
  if (on_device()) {
    update(torch::full({1}, found_inf ? 1.0 : 0.0, scale_.options()));
    return;
  }
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

void LossScaler::update(const torch::Tensor& found_inf) {
  if (!enabled_) return;
  if (!on_device()) throw std::logic_error("LossScaler::update(Tensor) needs keep_on_device()");
  // Same rule as the host's: ATen's kernel is what torch.amp.GradScaler runs.
  at::_amp_update_scale_(scale_, growth_tracker_, found_inf, config_.growth_factor, config_.backoff_factor,
                         config_.growth_interval);
  skipped_.add_(found_inf.reshape(c10::IntArrayRef{}).to(torch::kLong));
}

}  // namespace hpctrain
