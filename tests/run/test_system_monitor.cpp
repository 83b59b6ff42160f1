// The system monitor (run/SystemMonitor) in one process: samples on its thread, the CPU
// path without a GPU, and NVML reported absent rather than failing where no driver is.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "run/SystemMonitor.hpp"

using namespace hpctrain;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Waits (up to a generous deadline, not a timing check) until `n` samples were taken.
SystemSample wait_for_samples(const SystemMonitor& m, std::int64_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (m.latest().sequence < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return m.latest();
}

}  // namespace

TEST(SystemMonitor, SamplesTheProcessOnItsThread) {
  SystemMonitor monitor(0.01, -1);
  EXPECT_EQ(monitor.summary().nvml, "cpu run");
  const SystemSample s = wait_for_samples(monitor, 3);
  ASSERT_GE(s.sequence, 3);
  EXPECT_GE(s.cpu_utilization, 0.0);
  EXPECT_GT(s.rss_bytes, 1e6);        // a process of this size holds more than a megabyte
  EXPECT_LT(s.gpu_utilization, 0.0);  // no GPU figures on a CPU run
  EXPECT_LT(s.gpu_memory_bytes, 0.0);
  const MonitorSummary summary = monitor.summary();
  EXPECT_GE(summary.samples, 3);
  EXPECT_GT(summary.rss_bytes_max, 1e6);
  EXPECT_LT(summary.gpu_utilization_mean, 0.0);
  monitor.add_main_seconds(0.5);
  EXPECT_DOUBLE_EQ(monitor.summary().main_seconds, 0.5);
}

TEST(SystemMonitor, StopsPromptlyWithALongInterval) {
  SystemMonitor monitor(3600.0, -1);  // the destructor wakes the thread instead of waiting an hour
  EXPECT_EQ(monitor.latest().sequence, 0);
}

TEST(NvmlDevice, AbsentLibraryIsReportedNotFatal) {
  const NvmlDevice gpu(0, "libnvidia-ml-not-installed.so.1");
  EXPECT_FALSE(gpu.ok());
  EXPECT_TRUE(starts_with(gpu.status(), "no NVML: ")) << gpu.status();
  SystemSample s;
  gpu.sample(s);  // no device: figures stay absent
  EXPECT_LT(s.gpu_utilization, 0.0);
}

TEST(NvmlDevice, LibraryWithoutNvmlIsRefused) {
  const NvmlDevice gpu(0, "libm.so.6");
  EXPECT_FALSE(gpu.ok());
  EXPECT_TRUE(starts_with(gpu.status(), "no NVML: libm.so.6 lacks")) << gpu.status();
}

TEST(NvmlDevice, TheDriversLibraryAnswersOrIsAbsent) {
  // On a GPU machine: "ok: NAME" and figures; elsewhere "no NVML: ...".
  const NvmlDevice gpu(0);
  SystemSample s;
  gpu.sample(s);
  if (gpu.ok()) {
    EXPECT_TRUE(starts_with(gpu.status(), "ok: ")) << gpu.status();
    EXPECT_GE(s.gpu_utilization, 0.0);
    EXPECT_GT(s.gpu_memory_bytes, 0.0);
  } else {
    EXPECT_TRUE(starts_with(gpu.status(), "no NVML: ")) << gpu.status();
  }
}
