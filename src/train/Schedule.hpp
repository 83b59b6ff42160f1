#pragma once
// Learning-rate schedules over optimizer steps, with linear warmup.
#include <cstdint>

#include "config/Config.hpp"

namespace hpctrain {

class LrSchedule {
 public:
  LrSchedule(const ScheduleConfig& config, double peak_lr, std::int64_t total_steps, std::int64_t steps_per_epoch);
  // Learning rate for optimizer step `step` (0-based).
  double at(std::int64_t step) const;

 private:
  ScheduleConfig c_;
  double peak_;
  std::int64_t total_;
  std::int64_t per_epoch_;
};

}  // namespace hpctrain
