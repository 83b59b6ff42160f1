#include "comm/StallWatchdog.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "comm/MpiLock.hpp"
#include "launch/Mpi.hpp"

namespace hpctrain {
namespace {

constexpr int kFields = 3;  // count, step, point

const char* point_name(std::int64_t point) {
  static const char* const names[] = {"its start", "its gradient reduction", "its log line", "its checkpoint"};
  return point >= 0 && point < 4 ? names[point] : "?";
}

// Written by remote puts, or by another process's thread on this node.
std::int64_t load(const std::int64_t* p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

std::string where(const std::int64_t* fields) {
  return "last reached step " + std::to_string(load(fields + 1)) + " at " + point_name(load(fields + 2));
}

// steady_clock is CLOCK_MONOTONIC on Linux: one clock for every process of a node.
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

StallWatchdog::StallWatchdog(const Communicator& comm, double timeout_seconds)
    : comm_(comm.raw()), rank_(comm.rank()), size_(comm.size()), timeout_(timeout_seconds) {
  const int slots = rank_ == 0 ? size_ : rank_ == 1 ? 1 : 0;
  const MPI_Aint bytes = static_cast<MPI_Aint>(slots) * kFields * static_cast<MPI_Aint>(sizeof(std::int64_t));
  HPCTRAIN_MPI(
      MPI_Win_allocate(bytes, static_cast<int>(sizeof(std::int64_t)), MPI_INFO_NULL, comm_, &slots_, &window_));
  std::fill(slots_, slots_ + slots * kFields, 0);
  HPCTRAIN_MPI(MPI_Win_lock_all(MPI_MODE_NOCHECK, window_));
  share_heartbeats();
  comm.barrier();  // the slots are zero before any put
  // Messages name world ranks (a cross-validation group's rank 0 is not the job's).
  MPI_Group group = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  HPCTRAIN_MPI(MPI_Comm_group(comm_, &group));
  HPCTRAIN_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> ranks(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) ranks[static_cast<std::size_t>(r)] = r;
  world_ranks_.resize(ranks.size());
  HPCTRAIN_MPI(MPI_Group_translate_ranks(group, size_, ranks.data(), world, world_ranks_.data()));
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  last_ = std::chrono::steady_clock::now();
  thread_ = std::thread([this] { watch(); });
}

void StallWatchdog::share_heartbeats() {
  HPCTRAIN_MPI(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_));
  int node_size = 1;
  HPCTRAIN_MPI(MPI_Comm_size(node_, &node_size));
  std::int64_t* mine = nullptr;
  HPCTRAIN_MPI(MPI_Win_allocate_shared(static_cast<MPI_Aint>(sizeof(std::int64_t)),
                                       static_cast<int>(sizeof(std::int64_t)), MPI_INFO_NULL, node_, &mine,
                                       &heartbeat_window_));
  __atomic_store_n(mine, now_ns(), __ATOMIC_RELAXED);
  heartbeat_ = mine;
  std::vector<int> group_ranks(static_cast<std::size_t>(node_size));
  HPCTRAIN_MPI(MPI_Allgather(&rank_, 1, MPI_INT, group_ranks.data(), 1, MPI_INT, node_));
  for (int i = 0; i < node_size; ++i) {
    MPI_Aint size = 0;
    int unit = 0;
    std::int64_t* theirs = nullptr;
    HPCTRAIN_MPI(MPI_Win_shared_query(heartbeat_window_, i, &size, &unit, &theirs));
    if (group_ranks[static_cast<std::size_t>(i)] != rank_) {
      neighbours_.push_back(Neighbour{group_ranks[static_cast<std::size_t>(i)], theirs});
    }
  }
}

StallWatchdog::~StallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  if (std::uncaught_exceptions() == 0 && MpiRuntime::initialized()) {
    MPI_Win_unlock_all(window_);
    MPI_Win_free(&window_);
    MPI_Win_free(&heartbeat_window_);
    MPI_Comm_free(&node_);
  }
}

void StallWatchdog::mark(std::int64_t step, Point point) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = true;
    last_ = std::chrono::steady_clock::now();
  }
  mine_[0] += 1;
  mine_[1] = step;
  mine_[2] = static_cast<std::int64_t>(point);
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  if (rank_ == 0) {
    for (int f = 0; f < kFields; ++f) __atomic_store_n(slots_ + f, mine_[f], __ATOMIC_RELAXED);
    if (size_ < 2) return;
  }
  const int target = rank_ == 0 ? 1 : 0;
  const MPI_Aint at = rank_ == 0 ? 0 : static_cast<MPI_Aint>(rank_) * kFields;
  HPCTRAIN_MPI(MPI_Put(mine_, kFields, MPI_INT64_T, target, at, kFields, MPI_INT64_T, window_));
  HPCTRAIN_MPI(MPI_Win_flush(target, window_));
}

void StallWatchdog::beat() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
  last_ = std::chrono::steady_clock::now();
}

void StallWatchdog::disarm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
}

StallWatchdog::DisarmAtEnd::~DisarmAtEnd() {
  if (watchdog) watchdog->disarm();
}

void StallWatchdog::watch() {
  // Rank 0 sees every count and reports first; rank 1 (which sees rank 0's) after a grace
  // period, any other rank after two.
  const double grace = std::max(2.0, timeout_ / 4);
  const double limit = timeout_ + grace * std::min(rank_, 2);
  const auto poll = std::chrono::duration<double>(poll_seconds());
  std::unique_lock<std::mutex> lock(mutex_);
  auto previous = std::chrono::steady_clock::now();
  while (!stop_) {
    __atomic_store_n(heartbeat_, now_ns(), __ATOMIC_RELAXED);  // this process is alive
    wake_.wait_for(lock, poll);
    const auto now = std::chrono::steady_clock::now();
    // This thread did not run for long: the process itself was stopped (and is continued, as
    // the launcher does before it ends it). The other ranks judge it; its own clock restarts.
    if (std::chrono::duration<double>(now - previous).count() > silent_after()) last_ = now;
    previous = now;
    if (stop_ || !armed_) continue;
    const double waited = std::chrono::duration<double>(now - last_).count();
    if (waited >= limit) {
      lock.unlock();
      fire(waited);
    }
  }
}

std::string StallWatchdog::stalled() const {
  // Behind: a lower count than the most any rank reached (rank 0 knows every count, rank 1
  // rank 0's). Silent: a process on this node whose watchdog thread stopped beating (a
  // stopped process, or one the kernel does not run).
  std::vector<std::string> found(static_cast<std::size_t>(size_));
  std::int64_t most = mine_[0];
  if (rank_ == 0) {
    for (int r = 0; r < size_; ++r) most = std::max(most, load(slots_ + r * kFields));
    for (int r = 0; r < size_; ++r) {
      if (load(slots_ + r * kFields) < most) found[static_cast<std::size_t>(r)] = where(slots_ + r * kFields);
    }
  } else if (rank_ == 1 && load(slots_) < most) {
    found[0] = where(slots_);
  }
  for (const Neighbour& n : neighbours_) {
    const double silent = static_cast<double>(now_ns() - load(n.heartbeat)) * 1e-9;
    if (silent < silent_after()) continue;
    std::string& f = found[static_cast<std::size_t>(n.rank)];
    f += (f.empty() ? "" : "; ") + ("no sign of life for " + std::to_string(static_cast<long long>(silent)) + " s");
  }
  std::string out;
  int count = 0;
  for (int r = 0; r < size_; ++r) {
    const std::string& f = found[static_cast<std::size_t>(r)];
    if (f.empty() || count++ >= 8) continue;
    out += (out.empty() ? "" : ", ") +
           ("rank " + std::to_string(world_ranks_[static_cast<std::size_t>(r)]) + " (" + f + ")");
  }
  if (count == 0) {
    return "no rank is behind in the points counted and every rank on this node responds, so a rank is stuck "
           "inside the collective itself or on another node";
  }
  return "stalled: " + out + (count > 8 ? " and " + std::to_string(count - 8) + " more" : "");
}

void StallWatchdog::fire(double waited) {
  const std::string message = "comm.timeout: no progress for " + std::to_string(static_cast<long long>(waited)) +
                              " s (comm.timeout=" + std::to_string(static_cast<long long>(timeout_)) +
                              "), this rank waiting in step " + std::to_string(mine_[1]) + " at " +
                              point_name(mine_[2]) + "; " + stalled() + ". Ending the job.";
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  std::fprintf(stderr, "hpctrain: error (rank %d of %d): %s\n", world_rank, world_size, message.c_str());
  std::fflush(stderr);
  // The stalled rank cannot take part in an orderly exit: the launcher ends every rank.
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace hpctrain
