#pragma once
// comm.timeout: a rank that stops making progress (stopped, swapped out, stuck in a driver or
// a file system) leaves the others waiting in the next collective for ever. The watchdog
// bounds that wait and names the ranks that did not arrive (Horovod's stall check, NCCL's
// watchdog).
//
// Each rank counts the points of the training loop it has reached (mark): a step's start and
// the start of its waits (gradient reduction, log line, checkpoint). Every rank passes the
// same points in the same order, so a lower count is a rank behind. Evaluation batches,
// whose number may differ by one between ranks, only show that this rank is alive (beat).
// The counts are published by one-sided puts into rank 0's window; rank 0's own count also
// goes to rank 1, so that a stalled rank 0 is named too. Counts cannot tell a rank stopped
// inside a collective from the ranks waiting there with it; so each watchdog thread also
// beats a clock in memory shared by the ranks of its node, and a process that is stopped
// (or never scheduled) shows as silent to its node's other ranks.
//
// A thread on each rank watches its own rank: while armed, when the rank has reached no new
// point for `timeout` seconds it reads the counts and the heartbeats from local memory (no
// MPI call: the main thread may be inside MPI, and the stalled rank cannot cooperate),
// prints one message naming the ranks behind or silent, and ends the job with MPI_Abort.
// Rank 0 reports first; rank 1 (which sees rank 0's count) a few seconds later; any other
// rank later still, naming only silent ranks of its node.
//
// A mark costs one put and flush of 24 bytes. Marks are made where the gradient reducer's
// thread calls MPI only non-blockingly (under the lock that serializes those calls), so the
// library's MPI_THREAD_SERIALIZED contract holds.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

class StallWatchdog {
 public:
  // Collective over `comm` (creates the windows and the node communicator). `timeout_seconds` > 0.
  StallWatchdog(const Communicator& comm, double timeout_seconds);
  // Collective when no exception is in flight (frees the window); otherwise the window is
  // left to MPI_Finalize, so an error on one rank cannot hang it here.
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // Where in a step a rank is; the message names it.
  enum class Point : std::int64_t { Start = 0, Reduction, LogLine, Checkpoint };
  // This rank reached the next point of step `step` (1-based): publishes its count and arms.
  void mark(std::int64_t step, Point point);
  // This rank is alive (an evaluation batch): restarts the clock, publishes nothing.
  void beat();
  // Disarms until the next mark (the loop has ended; what follows is not watched).
  void disarm();
  // Disarms `watchdog` (if set) when it goes out of scope, however the scope ends.
  struct DisarmAtEnd {
    StallWatchdog* watchdog = nullptr;
    ~DisarmAtEnd();
  };

 private:
  void share_heartbeats();  // collective: the node's shared heartbeats
  void watch();
  [[noreturn]] void fire(double waited);
  std::string stalled() const;  // the ranks behind or silent, as far as this rank can tell
  // The watchdog thread wakes every poll_seconds(); a heartbeat older than silent_after() is silence.
  double poll_seconds() const { return std::min(0.5, timeout_ / 4); }
  double silent_after() const { return std::max(2.0, 4 * poll_seconds()); }

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  double timeout_;
  MPI_Win window_ = MPI_WIN_NULL;
  // Per rank three numbers (count, step, point): rank 0 holds every rank's, rank 1 rank 0's.
  std::int64_t* slots_ = nullptr;
  std::int64_t mine_[3] = {0, 0, 0};  // this rank's
  std::vector<int> world_ranks_;      // of the communicator's ranks
  // The node's ranks share one heartbeat each (steady clock, ns), beaten by their watchdog thread.
  struct Neighbour {
    int rank;  // in the communicator
    const std::int64_t* heartbeat;
  };
  MPI_Comm node_ = MPI_COMM_NULL;
  MPI_Win heartbeat_window_ = MPI_WIN_NULL;
  std::int64_t* heartbeat_ = nullptr;  // this rank's
  std::vector<Neighbour> neighbours_;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool armed_ = false;
  std::chrono::steady_clock::time_point last_;  // of the latest mark
  std::thread thread_;
};

}  // namespace hpctrain
