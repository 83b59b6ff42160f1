// The sharded half of GradientReducer (parallel.shard, ZeRO stages 1 and 2): flat parameter
// buffers, reduce-scatter of the buckets into this rank's gradient chunks, and the all-gather
// of the updated parameter chunks.
#include <torch/csrc/autograd/variable.h>

#include <algorithm>

#include "comm/GradientReducer.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

torch::Tensor pinned(std::int64_t n) {
  return torch::empty({n}, torch::TensorOptions(torch::kFloat).pinned_memory(true));
}

}  // namespace

void GradientReducer::make_shards() {
  torch::NoGradGuard no_grad;
  const std::int64_t ranks = comm_.size(), rank = comm_.rank();
  shards_.resize(buckets_.size());
  host_shard_.assign(buckets_.size(), torch::Tensor());
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    ShardBucket& shard = shards_[b];
    const std::size_t first = bucket_first_[b];
    const auto options = slots_[first].parameter.options().requires_grad(false);
    shard.flat = torch::zeros({padded_[b]}, options);
    shard.chunk = padded_[b] / ranks;
    for (std::size_t i = first; i < first + bucket_slots_[b]; ++i) {
      Slot& s = slots_[i];
      auto view =
          shard.flat.narrow(0, s.offset, s.parameter.numel()).as_strided(s.parameter.sizes(), s.parameter.strides());
      view.copy_(s.parameter);
      // The parameter keeps its identity (modules, optimizer lists, hooks) and now lives in
      // the flat buffer: what PyTorch's `p.data = view` does.
      s.parameter.set_data(view);
      shard.members.emplace_back(s.parameter, s.offset);
    }
    shard.offset = rank * shard.chunk;
    shard.parameters = shard.flat.narrow(0, shard.offset, shard.chunk);
    // Stage 3 frees the flat buffer between uses: the chunk lives in storage of its own.
    if (shard_ == ShardStage::Parameters) shard.parameters = shard.parameters.clone();
    shard.parameters.set_requires_grad(true);
    shard.gradients = torch::zeros({shard.chunk}, options);
    shard.parameters.mutable_grad() = shard.gradients;
    shard_gradients_.push_back(shard.gradients);
  }
  if (shard_ == ShardStage::Parameters) make_window();
}

void GradientReducer::make_window() {
  if (bucket_group_.empty()) bucket_group_.assign(shards_.size(), 0);  // no groups: one
  WindowIo io;
  io.enqueue = [this](std::function<void()> task) {
    if (!worker_.joinable()) {
      task();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(Launch{0, true, {}, std::move(task)});
    }
    cv_.notify_all();
  };
  io.gather = [this](std::size_t b) { gather_bucket(b); };
  io.waiting = [this](bool on) { main_waiting_ = on; };
  // Whole until the trainer's first scope ends (the initial broadcast or a resume writes them
  // whole, then each rank keeps its chunks) or the first step's gather_parameters().
  window_ = std::make_unique<ParameterWindow>(shards_, bucket_group_, bucket_slots_, std::move(io));
}

void GradientReducer::gather_bucket(std::size_t b) {
  const double t0 = wall_seconds();
  ShardBucket& shard = shards_[b];
  const auto chunk = static_cast<std::size_t>(shard.chunk);
  if (nccl_ != nullptr) {
    nccl_->allgather_async(shard.flat, shard.chunk, comm_.rank());
    nccl_->order_compute_after();
  } else if (shard.flat.is_cuda()) {
    auto host = shard.flat.to(torch::kCPU);  // this rank's chunk in place; a blocking gather
    comm_.allgather_in_place(host.data_ptr<float>(), chunk);
    shard.flat.copy_(host);
  } else if (!worker_.joinable()) {
    comm_.allgather_in_place(shard.flat.data_ptr<float>(), chunk);
  } else {
    Request r = comm_.iallgather_in_place(shard.flat.data_ptr<float>(), chunk);
    drive([&] { return r.test(); });
  }
  const double dt = wall_seconds() - t0;
  std::lock_guard<std::mutex> lock(mutex_);
  times_.total_seconds += dt;
  times_.bytes += padded_[b] * static_cast<std::int64_t>(sizeof(float));
}

void GradientReducer::allocate_bucket(std::size_t b) {
  if (buckets_[b].defined()) return;
  const std::size_t first = bucket_first_[b];
  buckets_[b] = torch::zeros({padded_[b]}, slots_[first].parameter.options().requires_grad(false));
  for (std::size_t i = first; i < first + bucket_slots_[b]; ++i) {
    Slot& s = slots_[i];
    s.view =
        buckets_[b].narrow(0, s.offset, s.parameter.numel()).as_strided(s.parameter.sizes(), s.parameter.strides());
    // Stages 0 and 1: autograd accumulates into the bucket directly.
    if (shard_ < ShardStage::Gradients) s.parameter.mutable_grad() = s.view;
  }
  if (shard_ >= ShardStage::Gradients) {
    bucket_bytes_ += padded_[b] * static_cast<std::int64_t>(sizeof(float));
    bucket_peak_ = std::max(bucket_peak_, bucket_bytes_);
  }
}

void GradientReducer::release_bucket(std::size_t b) {
  if (!buckets_[b].defined()) return;
  const std::size_t first = bucket_first_[b];
  for (std::size_t i = first; i < first + bucket_slots_[b]; ++i) slots_[i].view = torch::Tensor();
  buckets_[b] = torch::Tensor();
  bucket_bytes_ -= padded_[b] * static_cast<std::int64_t>(sizeof(float));
}

void GradientReducer::add_to_bucket(std::size_t slot) {
  Slot& s = slots_[slot];
  const torch::Tensor g = s.parameter.grad();
  if (!g.defined()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    allocate_bucket(s.bucket);
  }
  // The bucket cannot be released under us: that waits for this slot to count as ready.
  torch::NoGradGuard no_grad;
  s.view.add_(g);
  s.parameter.mutable_grad().reset();
}

void GradientReducer::reduce_shard(std::size_t b, bool blocking) {
  const double t0 = wall_seconds();
  ShardBucket& shard = shards_[b];
  torch::Tensor full;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    allocate_bucket(b);  // stage 2: no gradient of this bucket arrived (zeros)
    full = buckets_[b];
  }
  const auto chunk = static_cast<std::size_t>(shard.chunk);
  if (nccl_ != nullptr) {
    // Queued on NCCL's stream; finish() waits for it. The stream keeps the bucket's memory.
    nccl_->reduce_scatter_sum_async(full, shard.gradients);
  } else {
    torch::Tensor send = full, recv = shard.gradients;
    if (full.is_cuda()) {
      if (!host_[b].defined()) host_[b] = pinned(padded_[b]);
      if (!host_shard_[b].defined()) host_shard_[b] = pinned(shard.chunk);
      send = host_[b];
      recv = host_shard_[b];
      send.copy_(full);
    }
    if (!overlap_ || blocking) {
      comm_.reduce_scatter_sum(send.data_ptr<float>(), recv.data_ptr<float>(), chunk);
    } else {
      Request r = comm_.ireduce_scatter_sum(send.data_ptr<float>(), recv.data_ptr<float>(), chunk);
      drive([&] { return r.test(); });
    }
    if (full.is_cuda()) shard.gradients.copy_(recv);
  }
  const double dt = wall_seconds() - t0;
  std::lock_guard<std::mutex> lock(mutex_);
  if (shard_ >= ShardStage::Gradients) release_bucket(b);
  times_.total_seconds += dt;
  times_.bytes += padded_[b] * static_cast<std::int64_t>(sizeof(float));
}

void GradientReducer::gather_parameters() {
  if (!sharded()) return;
  if (window_) {
    window_->free_gathered();  // stale now: the next use gathers the stepped chunks
    return;
  }
  const double t0 = wall_seconds();
  torch::NoGradGuard no_grad;
  const int rank = comm_.rank();
  std::int64_t bytes = 0;
  if (nccl_ != nullptr) {
    for (auto& shard : shards_) nccl_->allgather_async(shard.flat, shard.chunk, rank);
    nccl_->order_compute_after();  // the next forward waits for the parameters on the device
  } else {
    // All buckets in flight at once; GPU buffers staged through host memory.
    std::vector<Request> requests;
    std::vector<torch::Tensor> staged(shards_.size());
    for (std::size_t b = 0; b < shards_.size(); ++b) {
      ShardBucket& shard = shards_[b];
      torch::Tensor buffer = shard.flat;
      if (buffer.is_cuda()) {
        if (!host_[b].defined()) host_[b] = pinned(padded_[b]);
        staged[b] = host_[b];
        staged[b].narrow(0, rank * shard.chunk, shard.chunk).copy_(shard.parameters);
        buffer = staged[b];
      }
      requests.push_back(comm_.iallgather_in_place(buffer.data_ptr<float>(), static_cast<std::size_t>(shard.chunk)));
    }
    for (auto& r : requests) r.wait();
    for (std::size_t b = 0; b < shards_.size(); ++b) {
      if (staged[b].defined()) shards_[b].flat.copy_(staged[b]);
    }
  }
  for (std::size_t b = 0; b < shards_.size(); ++b) bytes += padded_[b] * static_cast<std::int64_t>(sizeof(float));
  const double dt = wall_seconds() - t0;
  std::lock_guard<std::mutex> lock(mutex_);
  times_.total_seconds += dt;
  times_.exposed_seconds += dt;
  times_.bytes += bytes;
}

std::vector<torch::Tensor> GradientReducer::stepped_parameters() const {
  std::vector<torch::Tensor> out;
  if (sharded()) {
    for (const auto& shard : shards_) out.push_back(shard.parameters);
  } else if (direct_) {
    out = direct_params_;
  } else {
    for (const auto& s : slots_) out.push_back(s.parameter);
  }
  return out;
}

ReducerMemory GradientReducer::memory() const {
  ReducerMemory m;
  const auto bytes = [](const torch::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; };
  if (window_) {  // before mutex_: the window takes its lock first
    m.parameters = window_->gathered_bytes();
    m.window_peak = window_->peak_bytes();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (window_) {
    for (const auto& shard : shards_) m.parameters += bytes(shard.parameters);
    for (const auto& g : shard_gradients_) m.gradients += bytes(g);
  } else if (sharded()) {
    for (const auto& shard : shards_) m.parameters += bytes(shard.flat);
    for (const auto& g : shard_gradients_) m.gradients += bytes(g);
  } else if (direct_) {
    for (const auto& p : direct_params_) m.parameters += bytes(p);
  } else {
    for (const auto& s : slots_) m.parameters += bytes(s.parameter);
  }
  for (const auto& b : buckets_) m.gradients += bytes(b);
  m.bucket_peak = bucket_peak_;
  return m;
}

}  // namespace hpctrain
