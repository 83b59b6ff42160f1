#pragma once
// A Kineto trace of some training steps (run.profile_steps): operators on the CPU and
// kernels, copies and synchronizations on the GPU, in the Chrome trace format.
#include <cstdint>
#include <memory>
#include <string>

namespace hpctrain {

class StepProfiler {
 public:
  // Traces steps [start, start + steps) of the run into `path`; steps == 0: never traces.
  StepProfiler(std::int64_t start, std::int64_t steps, std::string path, bool gpu);
  ~StepProfiler();  // stops a trace still running (an exception left the loop) without saving
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  void before_step(std::int64_t step);  // starts the trace at `start`
  // After step `step` (counted from 0) ran: stops and saves at the last traced one.
  // Returns the path written, or "".
  std::string after_step(std::int64_t step);

 private:
  std::int64_t start_, end_;
  std::string path_;
  bool gpu_;
  bool active_ = false;
};

}  // namespace hpctrain
