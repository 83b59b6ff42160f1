#include "train/Device.hpp"

#include <dlfcn.h>

#include <fstream>
#include <sstream>

#include "util/Error.hpp"

#if HPCTRAIN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace hpctrain {
namespace {
DeviceInfo& current() {
  static DeviceInfo info;
  return info;
}
#if HPCTRAIN_WITH_CUDA
// The NVIDIA driver's version, from NVML (loaded at run time: it ships with the driver, not
// the toolkit), else from the kernel module's /proc file; "" when neither answers.
std::string nvidia_driver_version() {
  if (void* nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL)) {
    using Init = int (*)();
    using Version = int (*)(char*, unsigned);
    auto init = reinterpret_cast<Init>(dlsym(nvml, "nvmlInit_v2"));
    auto version = reinterpret_cast<Version>(dlsym(nvml, "nvmlSystemGetDriverVersion"));
    auto shutdown = reinterpret_cast<Init>(dlsym(nvml, "nvmlShutdown"));
    std::string out;
    if (init && version && shutdown && init() == 0) {
      char buffer[96] = {};
      if (version(buffer, sizeof buffer) == 0) out = buffer;
      shutdown();
    }
    dlclose(nvml);
    if (!out.empty()) return out;
  }
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  ..."
  std::ifstream proc("/proc/driver/nvidia/version");
  std::string line;
  if (std::getline(proc, line)) {
    const auto at = line.find("Kernel Module");
    if (at != std::string::npos) {
      std::istringstream rest(line.substr(at + 13));
      std::string v;
      rest >> v;
      return v;
    }
  }
  return "";
}
#endif
}  // namespace

const DeviceInfo& compute_device() {
  return current();
}

const DeviceInfo& select_compute_device(const DeviceConfig& config, int local_rank, int local_size) {
  DeviceInfo info;
#if HPCTRAIN_WITH_CUDA
  info.visible_gpus = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
#endif
  if (config.type == "cpu" || (config.type == "auto" && info.visible_gpus == 0)) {
    if (config.type == "auto") {
      info.notice = HPCTRAIN_WITH_CUDA ? "device.type=auto: no GPU visible, training on the CPU"
                                       : "device.type=auto: this build has no CUDA support, training on the CPU";
    }
    current() = info;
    return current();
  }
  if (!HPCTRAIN_WITH_CUDA) {
    throw RuntimeFailure(
        "device.type=cuda: this build has no CUDA support (build against a CUDA LibTorch; "
        "`hpctrain --version` tells what was compiled in)");
  }
  if (info.visible_gpus == 0) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    throw RuntimeFailure(std::string("device.type=cuda: no GPU is visible to this process") +
                         (visible ? " (CUDA_VISIBLE_DEVICES=" + std::string(visible) + ")" : "") +
                         "; under Slurm request GPUs with --gpus-per-node or --gres=gpu:N");
  }
#if HPCTRAIN_WITH_CUDA
  const int index = local_rank % info.visible_gpus;
  info.shared = local_size > info.visible_gpus;
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
  info.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  const cudaDeviceProp* props = at::cuda::getDeviceProperties(index);
  info.name = props->name;
  info.memory_bytes = static_cast<std::int64_t>(props->totalGlobalMem);
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess) {
    info.driver = std::to_string(driver / 1000) + "." + std::to_string((driver % 1000) / 10);
  }
  info.nvidia_driver = nvidia_driver_version();
  at::globalContext().setBenchmarkCuDNN(config.cudnn_benchmark);
#else
  (void)local_rank;
  (void)local_size;
#endif
  current() = info;
  return current();
}

DeviceMemory device_memory(const torch::Device& device) {
  DeviceMemory m;
#if HPCTRAIN_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto all = static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    m.allocated = stats.allocated_bytes[all].current;
    m.reserved = stats.reserved_bytes[all].current;
    m.peak = stats.allocated_bytes[all].peak;
  }
#else
  (void)device;
#endif
  return m;
}

void synchronize(const torch::Device& device) {
#if HPCTRAIN_WITH_CUDA
  // The compute stream only: NCCL's stream is waited for (with a deadline) by the reducer.
  if (device.is_cuda()) c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
#else
  (void)device;
#endif
}

namespace {
constexpr std::size_t kPendingMarks = 512;  // one wait per ~100 training steps
}  // namespace

struct StepClock::Impl {
  Impl(PhaseTimer& t, bool on_gpu) : timer(t), gpu(on_gpu) {}
  PhaseTimer& timer;
  bool gpu = false;
#if HPCTRAIN_WITH_CUDA
  std::vector<at::cuda::CUDAEvent> events;  // events[0]: the reference point
  std::vector<Phase> phases;                // phases[i]: what ran between events[i-1] and events[i]
  std::size_t used = 0;
#endif
};

StepClock::StepClock(PhaseTimer& timer, const torch::Device& device)
    : impl_(std::make_unique<Impl>(timer, device.is_cuda())) {
#if HPCTRAIN_WITH_CUDA
  if (impl_->gpu) {
    for (std::size_t i = 0; i < kPendingMarks; ++i) impl_->events.emplace_back(cudaEventDefault);
    impl_->phases.resize(kPendingMarks);
  }
#endif
}

StepClock::~StepClock() = default;

void StepClock::start() {
#if HPCTRAIN_WITH_CUDA
  if (impl_->gpu) {
    flush();
    impl_->events[0].record();
    impl_->used = 1;
    return;
  }
#endif
  impl_->timer.restart();
}

void StepClock::mark(Phase phase) {
#if HPCTRAIN_WITH_CUDA
  if (impl_->gpu) {
    auto& m = *impl_;
    if (m.used == 0) start();
    if (m.used == kPendingMarks) flush();
    m.events[m.used].record();
    m.phases[m.used] = phase;
    ++m.used;
    return;
  }
#endif
  impl_->timer.mark(phase);
}

void StepClock::flush() {
#if HPCTRAIN_WITH_CUDA
  auto& m = *impl_;
  if (!m.gpu || m.used < 2) return;
  m.events[m.used - 1].synchronize();
  for (std::size_t i = 1; i < m.used; ++i) {
    m.timer.add(m.phases[i], static_cast<double>(m.events[i - 1].elapsed_time(m.events[i])) / 1000.0);
  }
  std::swap(m.events[0], m.events[m.used - 1]);
  m.used = 1;
#endif
}

struct CopyFences::Impl {
#if HPCTRAIN_WITH_CUDA
  std::vector<at::cuda::CUDAEvent> events;  // timing off: ordering only
#endif
  bool gpu = false;
};

CopyFences::CopyFences(const torch::Device& device, std::size_t buffers) : impl_(std::make_unique<Impl>()) {
  impl_->gpu = device.is_cuda();
#if HPCTRAIN_WITH_CUDA
  if (impl_->gpu) impl_->events.resize(buffers);
#else
  (void)buffers;
#endif
}

CopyFences::~CopyFences() = default;

void CopyFences::record(std::size_t buffer) {
#if HPCTRAIN_WITH_CUDA
  if (impl_->gpu) impl_->events.at(buffer).record();
#else
  (void)buffer;
#endif
}

void CopyFences::wait(std::size_t buffer) {
#if HPCTRAIN_WITH_CUDA
  // An event never recorded is complete: synchronize() returns at once.
  if (impl_->gpu) impl_->events.at(buffer).synchronize();
#else
  (void)buffer;
#endif
}

}  // namespace hpctrain
