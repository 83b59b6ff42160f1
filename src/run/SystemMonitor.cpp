#include "run/SystemMonitor.hpp"

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "util/SystemStats.hpp"

#if HPCTRAIN_NVML_HEADER
#include <nvml.h>
#else
// Built without nvml.h (the nvidia-nvml-dev wheel, scripts/requirements.txt): the few
// declarations used, as nvml.h has them. Only their types are used, through dlsym.
extern "C" {
typedef struct nvmlDevice_st* nvmlDevice_t;
typedef int nvmlReturn_t;
typedef struct {
  unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
  unsigned long long total, free, used;
} nvmlMemory_t;
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
const char* nvmlErrorString(nvmlReturn_t);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t*);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char*, nvmlDevice_t*);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t, char*, unsigned int);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, nvmlUtilization_t*);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t*);
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t, unsigned int*);
}
#endif

namespace hpctrain {

struct NvmlDevice::Api {
  decltype(&nvmlInit_v2) init = nullptr;
  decltype(&nvmlShutdown) shutdown = nullptr;
  decltype(&nvmlErrorString) error_string = nullptr;
  decltype(&nvmlDeviceGetHandleByIndex_v2) by_index = nullptr;
  decltype(&nvmlDeviceGetHandleByUUID) by_uuid = nullptr;
  decltype(&nvmlDeviceGetName) name = nullptr;
  decltype(&nvmlDeviceGetUtilizationRates) utilization = nullptr;
  decltype(&nvmlDeviceGetMemoryInfo) memory = nullptr;
  decltype(&nvmlDeviceGetPowerUsage) power = nullptr;
};

namespace {

template <typename F>
bool bind_symbol(void* library, const char* name, F& out) {
  out = reinterpret_cast<F>(::dlsym(library, name));
  return out != nullptr;
}

// The device CUDA calls `ordinal`, as NVML names it: CUDA_VISIBLE_DEVICES' entry at that
// position (an index or a GPU-/MIG- UUID), else the ordinal itself (NVML ignores the variable).
std::string nvml_device_name(int ordinal) {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!visible || !*visible) return std::to_string(ordinal);
  std::vector<std::string> entries;
  std::stringstream list(visible);
  for (std::string e; std::getline(list, e, ',');) entries.push_back(e);
  return ordinal < static_cast<int>(entries.size()) ? entries[static_cast<std::size_t>(ordinal)]
                                                    : std::to_string(ordinal);
}

double process_cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

NvmlDevice::NvmlDevice(int cuda_ordinal, const char* library) : api_(std::make_unique<Api>()) {
  library_ = ::dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!library_) {
    const char* why = ::dlerror();
    status_ = std::string("no NVML: ") + (why ? why : library);
    return;
  }
  Api& a = *api_;
  if (!bind_symbol(library_, "nvmlInit_v2", a.init) || !bind_symbol(library_, "nvmlShutdown", a.shutdown) ||
      !bind_symbol(library_, "nvmlErrorString", a.error_string) ||
      !bind_symbol(library_, "nvmlDeviceGetHandleByIndex_v2", a.by_index) ||
      !bind_symbol(library_, "nvmlDeviceGetHandleByUUID", a.by_uuid) ||
      !bind_symbol(library_, "nvmlDeviceGetName", a.name) ||
      !bind_symbol(library_, "nvmlDeviceGetUtilizationRates", a.utilization) ||
      !bind_symbol(library_, "nvmlDeviceGetMemoryInfo", a.memory) ||
      !bind_symbol(library_, "nvmlDeviceGetPowerUsage", a.power)) {
    status_ = std::string("no NVML: ") + library + " lacks a function hpctrain needs";
    ::dlclose(library_);
    library_ = nullptr;
    return;
  }
  if (const auto rc = a.init(); rc != 0) {
    status_ = std::string("no NVML: nvmlInit: ") + a.error_string(rc);
    ::dlclose(library_);
    library_ = nullptr;
    return;
  }
  const std::string which = nvml_device_name(cuda_ordinal);
  nvmlDevice_t device = nullptr;
  const auto rc = which.rfind("GPU-", 0) == 0 || which.rfind("MIG-", 0) == 0
                      ? a.by_uuid(which.c_str(), &device)
                      : a.by_index(static_cast<unsigned>(std::atoi(which.c_str())), &device);
  if (rc != 0) {
    status_ = "no NVML: device " + which + ": " + a.error_string(rc);
    return;
  }
  device_ = device;
  char name[96] = {0};
  a.name(device, name, sizeof(name));
  status_ = std::string("ok: ") + name;
}

NvmlDevice::~NvmlDevice() {
  if (!library_) return;
  api_->shutdown();
  ::dlclose(library_);
}

void NvmlDevice::sample(SystemSample& s) const {
  if (!device_) return;
  auto device = static_cast<nvmlDevice_t>(device_);
  nvmlUtilization_t util{};
  if (api_->utilization(device, &util) == 0) s.gpu_utilization = util.gpu / 100.0;
  nvmlMemory_t memory{};
  if (api_->memory(device, &memory) == 0) s.gpu_memory_bytes = static_cast<double>(memory.used);
  unsigned int milliwatts = 0;
  if (api_->power(device, &milliwatts) == 0) s.gpu_power_w = milliwatts / 1000.0;
}

SystemMonitor::SystemMonitor(double interval_s, int gpu_ordinal) : interval_(interval_s) {
  if (gpu_ordinal >= 0) {
    gpu_owner_ = std::make_unique<NvmlDevice>(gpu_ordinal);
    gpu_ = gpu_owner_.get();
    summary_.nvml = gpu_->status();
  } else {
    summary_.nvml = "cpu run";
  }
  last_wall_ = wall_seconds();
  last_cpu_ = process_cpu_seconds();
  thread_ = std::thread([this] { loop(); });
}

SystemMonitor::~SystemMonitor() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SystemMonitor::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, std::chrono::duration<double>(interval_), [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    take();
    lock.lock();
  }
}

void SystemMonitor::take() {
  const double start = wall_seconds();
  const double cpu = process_cpu_seconds();
  SystemSample s;
  s.cpu_utilization = start > last_wall_ ? (cpu - last_cpu_) / (start - last_wall_) : 0.0;
  last_wall_ = start;
  last_cpu_ = cpu;
  s.rss_bytes = static_cast<double>(current_rss_bytes());
  if (gpu_) gpu_->sample(s);
  std::lock_guard<std::mutex> lock(mutex_);
  s.sequence = latest_.sequence + 1;
  latest_ = s;
  MonitorSummary& m = summary_;
  m.samples = s.sequence;
  cpu_sum_ += s.cpu_utilization;
  m.cpu_utilization_mean = cpu_sum_ / static_cast<double>(m.samples);
  m.rss_bytes_max = std::max(m.rss_bytes_max, s.rss_bytes);
  if (s.gpu_utilization >= 0) {
    ++gpu_samples_;
    gpu_util_sum_ += s.gpu_utilization;
    gpu_power_sum_ += std::max(0.0, s.gpu_power_w);
    m.gpu_utilization_mean = gpu_util_sum_ / static_cast<double>(gpu_samples_);
    m.gpu_power_w_mean = gpu_power_sum_ / static_cast<double>(gpu_samples_);
    m.gpu_memory_bytes_max = std::max(m.gpu_memory_bytes_max, s.gpu_memory_bytes);
  }
  m.sampler_seconds += wall_seconds() - start;
}

SystemSample SystemMonitor::latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return latest_;
}

MonitorSummary SystemMonitor::summary() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return summary_;
}

void SystemMonitor::add_main_seconds(double s) {
  std::lock_guard<std::mutex> lock(mutex_);
  summary_.main_seconds += s;
}

}  // namespace hpctrain
