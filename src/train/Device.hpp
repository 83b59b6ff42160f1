#pragma once
// The device each rank computes on (device.type): chosen once per process from the rank's
// local rank, like torch's current device, and read by every Trainer of the process.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/Config.hpp"
#include "train/PhaseTimer.hpp"

namespace hpctrain {

struct DeviceInfo {
  torch::Device device{torch::kCPU};
  std::string name = "cpu";       // the GPU's name, or "cpu"
  std::int64_t memory_bytes = 0;  // the GPU's total memory
  int visible_gpus = 0;           // GPUs this process sees
  std::string driver;             // CUDA driver version ("13.0"), "" without a GPU
  std::string nvidia_driver;      // the NVIDIA kernel driver ("580.159.04"), "" when unknown
  std::string notice;             // what rank 0 prints when auto fell back to the CPU
  bool shared = false;            // more ranks on this node than GPUs: ranks share a GPU
};

// Chooses and activates the device: auto takes the GPU at local_rank modulo the visible
// GPUs when there is one, else the CPU; cuda throws RuntimeFailure when no GPU is visible
// or CUDA was not compiled in. Sets cuDNN's benchmark mode. Call once, on every rank.
const DeviceInfo& select_compute_device(const DeviceConfig& config, int local_rank, int local_size);
// The device select_compute_device chose (the CPU before it is called).
const DeviceInfo& compute_device();

struct DeviceMemory {
  std::int64_t allocated = 0;  // bytes held by tensors now
  std::int64_t reserved = 0;   // bytes held by the caching allocator now
  std::int64_t peak = 0;       // peak of allocated since the process started
};
// The GPU memory figures of `device` (zeros on the CPU).
DeviceMemory device_memory(const torch::Device& device);
// Waits for the work queued on the device's compute stream (no-op on the CPU): phase
// timing on a GPU needs it, and the input pipeline reuses a pinned buffer only after it.
void synchronize(const torch::Device& device);

// Phase times of the training loop. On the CPU: wall time between marks. On a GPU: the
// time between CUDA events recorded on the compute stream at each mark, so nothing waits
// at a mark and the host keeps queueing work while the GPU computes (a wait per phase
// would expose every kernel launch). The events are read in batches, one wait every few
// hundred marks, and at flush().
class StepClock {
 public:
  StepClock(PhaseTimer& timer, const torch::Device& device);
  ~StepClock();
  StepClock(const StepClock&) = delete;
  StepClock& operator=(const StepClock&) = delete;
  void start();  // the reference point of the next mark: now (CPU), the stream's position (GPU)
  void mark(Phase phase);
  void flush();  // charges every pending mark to the timer; waits for the GPU to reach the last

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Host buffers that asynchronous copies to the GPU read: buffer i may be refilled only once
// the copy queued from it has run. record(i) after queueing the copy, wait(i) before
// refilling (no-op on the CPU and before the first record).
class CopyFences {
 public:
  CopyFences(const torch::Device& device, std::size_t buffers);
  ~CopyFences();
  CopyFences(const CopyFences&) = delete;
  CopyFences& operator=(const CopyFences&) = delete;
  void record(std::size_t buffer);
  void wait(std::size_t buffer);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hpctrain
