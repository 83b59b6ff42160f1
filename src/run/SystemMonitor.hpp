#pragma once
// run.monitor_seconds: each rank samples its process and its GPU on a background thread
// that never calls MPI; the main thread takes the latest sample at the logged steps, where
// the ranks gather them (RunDriver's step callback) and rank 0 writes a `system` line.
//
// CPU utilization is the process's user + system CPU time over the interval's wall time
// (getrusage, every thread: 2.0 = two cores busy); resident memory from /proc/self/statm.
// On GPUs, NVML gives utilization, memory in use and power. libnvidia-ml.so.1 is the
// driver's: it is opened with dlopen when the monitor starts, so the binary runs where no
// driver is installed, and the monitor then says "no NVML: ..." instead of GPU figures.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace hpctrain {

// One sample; GPU figures are negative where there are none.
struct SystemSample {
  std::int64_t sequence = 0;  // samples taken so far (0: none yet)
  double cpu_utilization = 0;
  double rss_bytes = 0;
  double gpu_utilization = -1;  // fraction of the interval a kernel ran (NVML), 0..1
  double gpu_memory_bytes = -1;
  double gpu_power_w = -1;
};

// A running summary of the samples, for report.json.
struct MonitorSummary {
  std::int64_t samples = 0;
  double cpu_utilization_mean = 0, rss_bytes_max = 0;
  double gpu_utilization_mean = -1, gpu_memory_bytes_max = -1, gpu_power_w_mean = -1;
  double sampler_seconds = 0;  // wall time the sampling thread spent taking samples
  double main_seconds = 0;     // wall time the main thread spent on the monitor (gathers, lines)
  std::string nvml;            // "ok: NAME", "no NVML: why", or "cpu run"
};

// NVML through dlopen. `cuda_ordinal` is the CUDA device the rank computes on; with
// CUDA_VISIBLE_DEVICES it is mapped to the physical index or UUID it names.
class NvmlDevice {
 public:
  explicit NvmlDevice(int cuda_ordinal, const char* library = "libnvidia-ml.so.1");
  ~NvmlDevice();
  NvmlDevice(const NvmlDevice&) = delete;
  NvmlDevice& operator=(const NvmlDevice&) = delete;
  bool ok() const { return device_ != nullptr; }
  const std::string& status() const { return status_; }
  // Fills the GPU figures of `s`; leaves them negative when a call fails.
  void sample(SystemSample& s) const;

 private:
  struct Api;
  std::unique_ptr<Api> api_;
  void* library_ = nullptr;
  void* device_ = nullptr;
  std::string status_;
};

class SystemMonitor {
 public:
  // interval_s > 0; gpu_ordinal < 0: a CPU run (NVML is not opened).
  SystemMonitor(double interval_s, int gpu_ordinal);
  ~SystemMonitor();
  SystemMonitor(const SystemMonitor&) = delete;
  SystemMonitor& operator=(const SystemMonitor&) = delete;
  SystemSample latest() const;
  MonitorSummary summary() const;
  double interval() const { return interval_; }
  // The main thread's time spent for the monitor (counted in summary().main_seconds).
  void add_main_seconds(double s);

 private:
  void loop();
  void take();
  double interval_;
  NvmlDevice* gpu_ = nullptr;
  std::unique_ptr<NvmlDevice> gpu_owner_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  SystemSample latest_;
  MonitorSummary summary_;
  double gpu_util_sum_ = 0, gpu_power_sum_ = 0, cpu_sum_ = 0;
  std::int64_t gpu_samples_ = 0;
  double last_wall_ = 0, last_cpu_ = 0;
  std::thread thread_;
};

}  // namespace hpctrain
