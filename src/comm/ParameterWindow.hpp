#pragma once
// parallel.shard=parameters (ZeRO stage 3): between uses a rank holds only its chunk of each
// bucket's parameters. A bucket's flat buffer is all-gathered from every rank's chunk just
// before the parameters in it are used and freed after: its storage shrinks to no bytes while
// the parameters keep their identity, shape and strides, so what autograd saved from them
// sees the values again once the bucket is regathered for backward.
//
// Buckets belong to one group each (a model piece). The trainer gathers a piece's group before
// its forward and before its backward, prefetches the next one, and frees a group after its
// forward; a bucket whose gradients have all arrived in a backward is freed then. The gathered
// window is thus the piece running plus the one prefetched.
#include <torch/torch.h>

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

namespace hpctrain {

struct ShardBucket;

// CPU memory straight from the OS (mmap), returned to it on free (munmap), for the gathered
// parameter buffers: through the C library's allocator, buffers that large and freed every step
// stayed cached in it and the resident size did not fall with them (docs/benchmarks.md, "A
// model that does not fit one rank"). The price is fresh pages (page faults, zeroing) at every
// gather.
c10::DataPtr os_pages(std::size_t bytes);

// How the window reaches the communicator, provided by the gradient reducer.
struct WindowIo {
  // Runs a task on the thread that calls MPI or NCCL, in order with the reductions (or at once).
  std::function<void(std::function<void()>)> enqueue;
  // All-gathers bucket b's chunks into its flat buffer (allocated, this rank's chunk in place).
  std::function<void(std::size_t)> gather;
  // The main thread waits (or no longer waits) for the communication thread.
  std::function<void(bool)> waiting;
};

class ParameterWindow {
 public:
  // `groups`: each bucket's group; `slots`: each bucket's parameter count. Starts with every
  // bucket gathered (the flat buffers as built, no collective): free_gathered() or the end of a
  // WholeParameters scope (with write-back, after the parameters were set) frees them.
  ParameterWindow(std::vector<ShardBucket>& shards, std::vector<std::int64_t> groups, std::vector<std::size_t> slots,
                  WindowIo io);
  ParameterWindow(const ParameterWindow&) = delete;
  ParameterWindow& operator=(const ParameterWindow&) = delete;

  // Collective over the replicas, in the same order on every rank.
  void gather(std::int64_t group);    // the group's buckets, waiting until they are whole
  void prefetch(std::int64_t group);  // the same, without waiting
  void free(std::int64_t group);      // local
  // Every bucket whole (collective) until the matching free_all (local), which with
  // `write_back` first copies this rank's part of each flat buffer into its chunk: for what
  // writes the parameters (a resume, a broadcast, the best weights put back). Nests.
  void gather_all();
  void free_all(bool write_back);
  void free_gathered();  // every gathered bucket, outside gather_all (local)
  // A backward accumulated the gradient of bucket `bucket`'s parameter `slot` (0-based within
  // the bucket): once each has arrived, the bucket is freed. Autograd's thread.
  void gradient_arrived(std::size_t bucket, std::size_t slot);
  void new_step();  // forgets the gradients counted so far

  std::int64_t gathered_bytes() const;
  std::int64_t peak_bytes() const;  // the most gathered at once outside gather_all

 private:
  enum class State { Freed, Pending, Gathered };
  bool mark(std::size_t bucket);  // requires mutex_ held: Freed -> Pending (true), else false
  std::vector<std::size_t> mark_group(std::int64_t group, bool all);
  void launch(const std::vector<std::size_t>& buckets);  // their gathers, in order
  void wait_group(std::int64_t group, bool all);
  void wait_for(std::size_t bucket, std::unique_lock<std::mutex>& lock);
  void release(std::size_t bucket, bool write_back);  // requires mutex_ held, not Pending
  void release_every(bool write_back, std::unique_lock<std::mutex>& lock);
  void forget_arrivals(std::size_t bucket);  // requires mutex_ held

  std::vector<ShardBucket>& shards_;
  std::vector<std::int64_t> groups_;
  WindowIo io_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<State> state_;
  std::vector<std::vector<bool>> arrived_;
  std::vector<std::size_t> arrived_count_;
  std::int64_t bytes_ = 0, peak_ = 0;
  int whole_depth_ = 0;
  std::exception_ptr error_;
};

// Every parameter whole while it lives: ParameterWindow::gather_all, then free_all. Without a
// window (other stages, no sharding) it does nothing.
class WholeParameters {
 public:
  WholeParameters(ParameterWindow* window, bool write_back) : window_(window), write_back_(write_back) {
    if (window_ != nullptr) window_->gather_all();
  }
  ~WholeParameters() {
    if (window_ != nullptr) window_->free_all(write_back_);
  }
  WholeParameters(const WholeParameters&) = delete;
  WholeParameters& operator=(const WholeParameters&) = delete;

 private:
  ParameterWindow* window_;
  bool write_back_;
};

}  // namespace hpctrain
