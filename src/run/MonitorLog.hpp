#pragma once
// The system monitor's place in a run (run.monitor_seconds, docs/outputs.md). Every rank
// samples on its monitor thread, which never calls MPI. From the trainer's step callback
// (main thread, no reduction in flight) each rank sends a new sample to rank 0 with a
// non-blocking send on a communicator of the monitor's own; rank 0 keeps one receive posted
// per rank, and when its own sampler has a new sample it writes one `system` line to
// metrics.jsonl with the latest sample of every rank. Point-to-point rather than a
// collective: the callback also runs once per evaluation batch, and ranks may evaluate
// different numbers of batches, so no count of calls is common to all ranks.
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/Communicator.hpp"
#include "run/SystemMonitor.hpp"
#include "train/MetricsLog.hpp"

namespace hpctrain {

class MonitorLog {
 public:
  static constexpr std::size_t kWidth = 7;  // sequence, last flag, cpu, rss, gpu util, memory, power

  // Collective over `world` (splits a communicator). interval_s 0: off, every call a no-op.
  MonitorLog(double interval_s, int gpu_ordinal, const Communicator& world, MetricsLog* log);
  ~MonitorLog();
  // The trainer's step callback: sends or receives samples, never waits.
  void on_callback();
  // Collective, once after training: every rank's last sample reaches rank 0, which writes
  // the last line; afterwards nothing is in flight.
  void finish();
  bool enabled() const { return monitor_ != nullptr; }
  MonitorSummary summary() const { return monitor_ ? monitor_->summary() : MonitorSummary{}; }
  double interval() const { return monitor_ ? monitor_->interval() : 0.0; }

 private:
  void send_latest(bool last);
  void receive_ready(bool wait_for_last);
  void write_line();
  std::unique_ptr<SystemMonitor> monitor_;
  std::unique_ptr<Communicator> comm_;
  MetricsLog* log_ = nullptr;
  double start_ = 0;
  bool finished_ = false;
  // Ranks other than 0: the sample in flight and its send.
  std::vector<double> outgoing_;
  std::unique_ptr<Request> send_;
  std::int64_t sent_sequence_ = 0;
  // Rank 0: the latest row of every rank, a posted receive per rank, and what was written.
  std::vector<double> latest_, incoming_;
  std::vector<std::unique_ptr<Request>> receives_;
  std::int64_t written_sequence_ = 0;
};

}  // namespace hpctrain
