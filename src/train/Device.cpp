#include "train/Device.hpp"

#include "util/Error.hpp"

#if HPCTRAIN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
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
    throw RuntimeFailure("device.type=cuda: this build has no CUDA support (build against a CUDA LibTorch; "
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

}  // namespace hpctrain
