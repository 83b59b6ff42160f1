#include "train/Schedule.hpp"

#include <algorithm>
#include <cmath>

namespace hpctrain {
namespace {
constexpr double kPi = 3.14159265358979323846;
double cosine_between(double from, double to, double t) {
  return to + (from - to) * 0.5 * (1.0 + std::cos(kPi * t));
}
}  // namespace

LrSchedule::LrSchedule(const ScheduleConfig& config, double peak_lr, std::int64_t total_steps,
                       std::int64_t steps_per_epoch)
    : c_(config),
      peak_(peak_lr),
      total_(std::max<std::int64_t>(1, total_steps)),
      per_epoch_(std::max<std::int64_t>(1, steps_per_epoch)) {}

double LrSchedule::at(std::int64_t step) const {
  if (c_.name == "onecycle") {
    const double initial = peak_ / c_.onecycle_div_factor;
    const double final_lr = initial / c_.onecycle_final_div_factor;
    const double up = std::max(1.0, c_.onecycle_pct_start * static_cast<double>(total_) - 1.0);
    const double s = static_cast<double>(step);
    if (s <= up) return cosine_between(initial, peak_, s / up);
    const double down = std::max(1.0, static_cast<double>(total_ - 1) - up);
    return cosine_between(peak_, final_lr, std::min(1.0, (s - up) / down));
  }
  if (step < c_.warmup_steps) {
    const double t = static_cast<double>(step + 1) / static_cast<double>(c_.warmup_steps);
    return peak_ * (c_.warmup_start_factor + (1.0 - c_.warmup_start_factor) * t);
  }
  if (c_.name == "step") {
    const std::int64_t epoch = step / per_epoch_;
    return peak_ * std::pow(c_.step_gamma, static_cast<double>(epoch / c_.step_epochs));
  }
  if (c_.name == "cosine") {
    const double span = static_cast<double>(std::max<std::int64_t>(1, total_ - c_.warmup_steps));
    const double t = std::min(1.0, static_cast<double>(step - c_.warmup_steps) / span);
    return cosine_between(peak_, peak_ * c_.min_lr_factor, t);
  }
  return peak_;
}

}  // namespace hpctrain
