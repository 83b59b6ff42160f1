#pragma once
// Data-parallel gradient reduction in fused buckets, overlapped with backward.
//
// Each parameter's .grad is a view into one flat bucket, so backward accumulates straight
// into the buffers that are reduced (no copies). Buckets follow the reverse of
// registration order, the order in which backward produces gradients. A hook after each
// gradient's accumulation counts what is ready; a bucket whose gradients are all ready is
// handed, in bucket order, to a communication thread that reduces it with MPI while
// backward goes on. finish() waits only for what is still in flight: that wait is the
// exposed communication time.
//
// Sharded (parallel.shard, ZeRO stages 1 and 2): each bucket is padded to a multiple of the
// ranks and the parameters become views into one flat buffer per bucket, so rank r's shard
// of a bucket is one contiguous chunk of parameters and gradients. A ready bucket is
// reduce-scattered instead of allreduced (rank r receives the sum of its chunk), the
// optimizer steps the chunks only, and gather_parameters() all-gathers the updated chunks:
// the communication volume of an allreduce. Stage 1 keeps the full gradient buckets between
// steps; stage 2 allocates a bucket when its first gradient arrives (autograd's gradient is
// added into it and dropped) and frees it once reduce-scattered, so between steps a rank
// holds only its gradient chunks. Stage 3 also frees the flat parameter buffers between uses
// (comm/ParameterWindow.hpp): a rank keeps its parameter chunks, stepped in their own storage.
#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "comm/Communicator.hpp"
#include "comm/HierarchicalSum.hpp"
#include "comm/NcclCommunicator.hpp"
#include "comm/ParameterWindow.hpp"

namespace hpctrain {

enum class ShardStage { None = 0, Optimizer = 1, Gradients = 2, Parameters = 3 };

// One bucket's shards: the flat buffer its parameters are views into, this rank's chunk of
// it (what the optimizer steps) and that chunk's reduced gradients (the chunk's .grad).
struct ShardBucket {
  torch::Tensor flat;        // size() x chunk values, the tail past the parameters zero
  torch::Tensor parameters;  // flat's chunk `rank` (stage 3: a copy, in its own storage)
  torch::Tensor gradients;   // chunk values
  std::int64_t chunk = 0;
  std::int64_t offset = 0;                                      // of the chunk in flat: rank x chunk
  std::vector<std::pair<torch::Tensor, std::int64_t>> members;  // each parameter and its offset in flat
};

// Bytes a rank holds for training, measured from the tensors.
struct ReducerMemory {
  std::int64_t parameters = 0;   // the trained parameters (flat buffers when sharded)
  std::int64_t gradients = 0;    // gradient buffers held between steps (buckets, chunks)
  std::int64_t bucket_peak = 0;  // stages 2, 3: the most bytes of full buckets alive at once
  std::int64_t window_peak = 0;  // stage 3: the most bytes of gathered parameters at once
};

struct ReducerTimes {
  double exposed_seconds = 0;  // main thread waiting for reductions after backward
  double total_seconds = 0;    // time spent in the reductions themselves
  std::int64_t bytes = 0;      // bytes reduced (per rank, payload)
};

class GradientReducer {
 public:
  // `overlap` false reduces every bucket after backward on the calling thread (the baseline); one
  // rank reduces nothing but with `nccl` (GPU parameters, outliving the reducer), which reduces on
  // its own stream. `alone_without_buckets`: with one rank (no NCCL) no buckets at all (training; a
  // benchmark wants them). `shard`: above. `groups` (none, or one per parameter): no bucket spans two.
  GradientReducer(std::vector<torch::Tensor> parameters, double bucket_mb, const Communicator& comm, bool overlap,
                  NcclCommunicator* nccl = nullptr, bool alone_without_buckets = false,
                  ShardStage shard = ShardStage::None, const std::vector<std::int64_t>& groups = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  void zero();        // zeroes the buckets before a step (not zero_grad(), which drops the views)
  void begin_step();  // starts a step without zeroing (zero() does this too)
  // Accumulation over microbatches: after hold(), gradients accumulate without counting as ready;
  // release(parameters), before the last backward that touches them, lets their buckets reduce in it.
  void hold();
  void release(const std::vector<torch::Tensor>& parameters);
  // After backward: starts any bucket not yet started and waits for all (the sums, or chunks).
  void finish();
  // NCCL's reductions follow the stream current at begin_step() or here (a captured step's).
  void follow_current_stream();
  void after_replay();  // a replayed graph with NCCL's reductions: waited for as finish() does

  // Sums `values` (1-D, contiguous, float32/64) over the ranks in place, in order with the buckets
  // (synchronized batch norm; with overlap queued on the communication thread: MPI is never called
  // from two threads at once). Summed on return; with NCCL the compute stream waits for the sum.
  void sum_in_order(torch::Tensor& values);

  // Sharded, after the optimizer stepped the chunks (nothing in flight): every chunk to every rank (with
  // NCCL the compute stream waits for it); stage 3 frees what is still gathered instead.
  void gather_parameters();
  ParameterWindow* window() const { return window_.get(); }  // stage 3 with more than one rank
  bool sharded() const { return shard_ != ShardStage::None; }
  const std::vector<ShardBucket>& shard_buckets() const { return shards_; }
  // Sharded, what the optimizer steps: the chunks (each with its gradient chunk as .grad).
  std::vector<torch::Tensor> stepped_parameters() const;
  ReducerMemory memory() const;

  // Scales the gradients to a global L2 norm of at most `max_norm` (by max_norm / (norm + 1e-6)
  // when above) on their device, no host wait; sharded, the chunks' squares summed over the ranks.
  void clip_to_norm(double max_norm);

  // comm.hierarchical (MPI only): within each node, among node leaders, back. Null: flat MPI_Allreduce.
  void use_hierarchical(std::unique_ptr<HierarchicalSum> sum) { hierarchical_ = std::move(sum); }
  const HierarchicalSum* hierarchical() const { return nccl_ == nullptr ? hierarchical_.get() : nullptr; }
  std::size_t bucket_count() const { return buckets_.size(); }
  std::int64_t element_count() const;
  // What to unscale, clip and step: the buckets; alone the parameters' own; sharded the chunks.
  const std::vector<torch::Tensor>& buckets() const;
  bool overlapping() const { return overlap_; }
  ReducerTimes times() const;  // cumulative since construction

  void on_gradient_ready(std::size_t slot);  // the post-accumulate hook of parameter `slot`

 private:
  struct Slot {
    torch::Tensor parameter, view;
    std::size_t bucket;
    std::int64_t offset;  // in the bucket
  };
  // A bucket's reduction; or a sum_in_order job (`values`: host, or GPU with NCCL); or a window's gather.
  struct Launch {
    std::size_t bucket;
    bool blocking;
    torch::Tensor values;
    std::function<void()> task = {};
  };
  void launch_ready_in_order(bool from_finish);  // requires mutex_ held
  void reduce(std::size_t bucket, bool blocking);
  void sum_now(torch::Tensor& values);  // on the thread that calls MPI or NCCL
  void worker_loop();
  // Tests a non-blocking operation until done: sleeping briefly in between unless the main thread waits.
  void drive(const std::function<bool()>& test);
  void make_shards();  // sharded (GradientShards.cpp)
  void reduce_shard(std::size_t bucket, bool blocking);
  void allocate_bucket(std::size_t bucket);  // requires mutex_ held
  void release_bucket(std::size_t bucket);   // requires mutex_ held
  void add_to_bucket(std::size_t slot);      // stage 2: autograd's gradient into the bucket
  void make_window();                        // stage 3
  void gather_bucket(std::size_t bucket);    // stage 3: the communication thread's part

  const Communicator& comm_;
  NcclCommunicator* nccl_ = nullptr;
  std::unique_ptr<HierarchicalSum> hierarchical_;
  std::vector<float> ring_scratch_;  // RingSum's receive buffer (communication thread only)
  bool overlap_;
  std::vector<torch::Tensor> buckets_;
  bool direct_ = false;  // alone_without_buckets: autograd's own gradients, dropped before each step
  std::vector<torch::Tensor> direct_params_;
  mutable std::vector<torch::Tensor> direct_grads_;
  std::vector<torch::Tensor> host_;  // GPU buckets: page-locked staging for MPI
  ShardStage shard_ = ShardStage::None;
  std::vector<ShardBucket> shards_;
  std::vector<std::int64_t> bucket_group_;                   // stage 3: each bucket's group
  std::unique_ptr<ParameterWindow> window_;                  // stage 3
  std::vector<torch::Tensor> shard_gradients_, host_shard_;  // the chunks' gradients; GPU staging
  std::vector<std::int64_t> padded_;                         // elements per bucket (padded when sharded)
  std::int64_t bucket_bytes_ = 0, bucket_peak_ = 0;          // stage 2: full buckets alive
  std::vector<Slot> slots_;
  std::vector<std::size_t> bucket_slots_, bucket_first_;  // per bucket: slots, first slot (in bucket order)
  bool hooks_ = false;                                    // ready hooks registered

  // Step state, guarded by mutex_.
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::size_t> pending_;  // gradients not yet ready, per bucket
  std::vector<bool> slot_ready_;
  std::vector<bool> slot_held_;                    // hold(): ready events do not count yet
  std::size_t next_launch_ = 0;                    // buckets launch strictly in index order
  std::deque<Launch> queue_;                       // launched, not yet taken by the worker
  std::size_t done_ = 0;                           // buckets reduced this step
  std::uint64_t sums_queued_ = 0, sums_done_ = 0;  // sum_in_order jobs
  bool stop_ = false;
  std::exception_ptr error_;
  std::atomic<bool> main_waiting_{false};
  ReducerTimes times_;
  std::thread worker_;
};

// Copies rank `root`'s parameters and buffers to every rank of `comm` (one fused broadcast).
void broadcast_module_state(torch::nn::Module& module, const Communicator& comm, int root);
// Averages floating-point buffers (batch-norm running statistics) over `comm`, so every
// rank evaluates and saves the same model.
void average_module_buffers(torch::nn::Module& module, const Communicator& comm);

}  // namespace hpctrain
