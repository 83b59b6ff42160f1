#include "train/Profiler.hpp"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include "train/Device.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {
namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(bool gpu) {
  std::set<ActivityType> a{ActivityType::CPU};
  if (gpu) a.insert(ActivityType::CUDA);
  return a;
}
}  // namespace

StepProfiler::StepProfiler(std::int64_t start, std::int64_t steps, std::string path, bool gpu)
    : start_(start), end_(start + steps), path_(std::move(path)), gpu_(gpu) {
  if (steps > 0) {
    // Setting up CUPTI takes a while: done here, outside the traced steps.
    kineto::prepareProfiler(ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true), activities(gpu_));
  }
}

StepProfiler::~StepProfiler() {
  if (active_) {
    try {
      kineto::disableProfiler();
    } catch (...) {  // nothing to report: the loop is already unwinding
    }
  }
}

void StepProfiler::before_step(std::int64_t step) {
  if (step != start_ || end_ <= start_ || active_) return;
  kineto::enableProfiler(ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true), activities(gpu_));
  active_ = true;
}

std::string StepProfiler::after_step(std::int64_t step) {
  if (!active_ || step + 1 < end_) return "";
  synchronize(compute_device().device);  // the traced steps' kernels have run
  auto result = kineto::disableProfiler();
  active_ = false;
  try {
    result->save(path_);
  } catch (const std::exception& e) {
    throw RuntimeFailure("run.profile_steps: cannot write " + path_ + ": " + e.what());
  }
  return path_;
}

}  // namespace hpctrain
