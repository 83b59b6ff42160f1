#pragma once
// Host-side batch preparation on a background thread: while step k computes, the thread
// turns step k+1's rows of the epoch (uint8, already in step order) into the float input
// batch: augmentation (crop, flip), conversion and normalization fused in one pass, into
// one of two buffers allocated once. No per-sample allocation, no copy of the rows first.
#include <torch/torch.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "data/ShardedDataset.hpp"

namespace hpctrain {

struct Batch {
  torch::Tensor input;    // float32 [n, C, H, W] or [n, F], valid until the next call to next()
  torch::Tensor targets;  // what the loss compares with: int64 labels, or standardized float32 targets
};

class BatchPipeline {
 public:
  // `pinned`: page-locked input buffers, for asynchronous copies to a GPU. `inputs` false:
  // the caller never reads the inputs (a pipeline stage after the first), so none are
  // prepared and a batch's input is an empty [n, 0] tensor that gives only the row count.
  BatchPipeline(const ShardedDataset& data, const DataConfig& config, std::uint64_t seed, std::int64_t batch_rows,
                bool pinned = false, bool inputs = true);
  ~BatchPipeline();
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // Starts an epoch: `rows` are this rank's samples in step order, `indices` their global
  // indices (augmentation draws depend on (seed, epoch, index) only).
  // `first_step` > 0 resumes the epoch there (the steps before it are not prepared).
  void start_epoch(Samples rows, std::vector<std::int64_t> indices, std::int64_t epoch, std::int64_t steps,
                   std::int64_t first_step = 0);
  // The batch of the next step; prepares the one after it in the background.
  Batch next();

 private:
  void prepare(std::int64_t step, int buffer);  // runs on the worker
  void worker_loop();

  const ShardedDataset& data_;
  DataConfig config_;
  std::uint64_t seed_;
  std::int64_t batch_rows_;
  bool inputs_;
  std::vector<float> scale_, shift_;  // per channel: x * scale + shift
  torch::Tensor buffers_[2];

  Samples rows_;
  std::vector<std::int64_t> indices_;
  std::int64_t epoch_ = 0, steps_ = 0, next_step_ = 0;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::int64_t requested_ = -1;  // step the worker should prepare next (-1: none)
  std::int64_t ready_ = -1;      // last step prepared
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

}  // namespace hpctrain
