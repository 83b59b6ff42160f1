#include "comm/GradientReducer.hpp"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "comm/RingSum.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

// Runs after autograd accumulated a parameter's gradient (the C++ side of PyTorch's
// register_post_accumulate_grad_hook).
struct ReadyHook : torch::autograd::PostAccumulateGradHook {
  ReadyHook(GradientReducer* reducer, std::size_t slot) : reducer_(reducer), slot_(slot) {}
  void operator()(const torch::autograd::Variable& /*tensor*/) override { reducer_->on_gradient_ready(slot_); }
  GradientReducer* reducer_;
  std::size_t slot_;
};

}  // namespace

GradientReducer::GradientReducer(std::vector<torch::Tensor> parameters, double bucket_mb, const Communicator& comm,
                                 bool overlap, NcclCommunicator* nccl, bool alone_without_buckets, ShardStage shard,
                                 const std::vector<std::int64_t>& groups)
    : comm_(comm),
      nccl_(nccl),
      overlap_(overlap && (comm.size() > 1 || nccl != nullptr)),  // NCCL on one rank: the many-rank path
      direct_(alone_without_buckets && comm.size() == 1 && nccl == nullptr),
      shard_(comm.size() > 1 ? shard : ShardStage::None) {
  if (direct_) {
    for (const auto& p : parameters) {
      if (p.requires_grad()) direct_params_.push_back(p);
    }
    zero();
    return;
  }
  const auto limit = static_cast<std::int64_t>(bucket_mb * 1024.0 * 1024.0);
  std::vector<std::vector<torch::Tensor>> buckets;
  std::int64_t bytes = 0;
  for (std::size_t i = parameters.size(); i-- > 0;) {
    const auto& p = parameters[i];
    if (!p.requires_grad()) continue;
    if (p.scalar_type() != torch::kFloat) throw RuntimeFailure("gradient buckets hold float32 parameters only");
    const std::int64_t pbytes = p.numel() * static_cast<std::int64_t>(sizeof(float));
    // A bucket never spans two groups (stage 3 gathers a group's buckets).
    const bool new_group = !groups.empty() && (bucket_group_.empty() || bucket_group_.back() != groups[i]);
    if (buckets.empty() || (bytes + pbytes > limit && bytes > 0) || new_group) {
      buckets.emplace_back();
      if (!groups.empty()) bucket_group_.push_back(groups[i]);
      bytes = 0;
    }
    buckets.back().push_back(p);
    bytes += pbytes;
  }
  const std::int64_t ranks = comm.size();
  for (const auto& group : buckets) {
    bucket_first_.push_back(slots_.size());
    std::int64_t off = 0;
    for (const auto& p : group) {
      // Views with the parameter's strides (contiguous or channels-last), so autograd
      // accumulates in place and the optimizer sees matching layouts.
      if (!p.is_non_overlapping_and_dense()) throw RuntimeFailure("gradient buckets need dense parameters");
      slots_.push_back(Slot{p, torch::Tensor(), buckets_.size(), off});
      off += p.numel();
    }
    // Sharded: a multiple of the ranks, so every rank's chunk has the same length.
    padded_.push_back(sharded() ? (off + ranks - 1) / ranks * ranks : off);
    bucket_slots_.push_back(group.size());
    buckets_.emplace_back();
  }
  pending_.assign(buckets_.size(), 0);
  host_.assign(buckets_.size(), torch::Tensor());
  slot_ready_.assign(slots_.size(), false);
  slot_held_.assign(slots_.size(), false);
  if (sharded()) make_shards();
  if (shard_ < ShardStage::Gradients) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::size_t b = 0; b < buckets_.size(); ++b) allocate_bucket(b);
  }
  // Stage 2 adds autograd's gradients into its buckets from the hook, overlapped or not.
  hooks_ = overlap_ || shard_ >= ShardStage::Gradients;
  if (hooks_) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      torch::autograd::impl::set_post_acc_grad_hooks(slots_[i].parameter, std::make_unique<ReadyHook>(this, i));
    }
  }
  if (overlap_) worker_ = std::thread([this] { worker_loop(); });
  zero();
}

GradientReducer::~GradientReducer() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  for (auto& s : slots_) {
    if (hooks_) torch::autograd::impl::set_post_acc_grad_hooks(s.parameter, nullptr);
  }
}

void GradientReducer::zero() {
  if (direct_) {
    for (auto& p : direct_params_) {
      if (p.grad().defined()) p.mutable_grad().reset();
    }
    return;
  }
  if (shard_ >= ShardStage::Gradients) {
    // Buckets come with the first gradient of the step; autograd's own are dropped.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (std::size_t b = 0; b < buckets_.size(); ++b) release_bucket(b);
    }
    for (auto& s : slots_) {
      if (s.parameter.grad().defined()) s.parameter.mutable_grad().reset();
    }
    begin_step();
    return;
  }
  for (auto& b : buckets_) b.zero_();
  for (auto& s : slots_) {
    // Autograd may have replaced a gradient instead of accumulating in place: re-attach.
    if (!s.parameter.grad().defined() || s.parameter.grad().data_ptr() != s.view.data_ptr()) {
      s.parameter.mutable_grad() = s.view;
    }
  }
  begin_step();
}

void GradientReducer::begin_step() {
  if (nccl_ != nullptr) nccl_->capture_compute_stream();
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t b = 0; b < buckets_.size(); ++b) pending_[b] = bucket_slots_[b];
  slot_ready_.assign(slots_.size(), false);
  slot_held_.assign(slots_.size(), false);
  next_launch_ = done_ = 0;
  // A window's gathers stay queued: their waiters expect them.
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [](const Launch& l) { return !l.task; }), queue_.end());
  if (window_) window_->new_step();
}

void GradientReducer::hold() {
  std::lock_guard<std::mutex> lock(mutex_);
  slot_held_.assign(slots_.size(), true);
}

void GradientReducer::release(const std::vector<torch::Tensor>& parameters) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& p : parameters) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].parameter.unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) slot_held_[i] = false;
    }
  }
}

void GradientReducer::on_gradient_ready(std::size_t slot) {
  Slot& s = slots_[slot];
  if (shard_ >= ShardStage::Gradients) {
    add_to_bucket(slot);
    if (window_) window_->gradient_arrived(s.bucket, slot - bucket_first_[s.bucket]);
  } else {
    const auto& g = s.parameter.grad();
    if (g.defined() && g.data_ptr() != s.view.data_ptr()) {
      s.view.copy_(g);
      s.parameter.mutable_grad() = s.view;
    }
  }
  if (!overlap_) return;  // finish() reduces every bucket
  std::lock_guard<std::mutex> lock(mutex_);
  if (slot_held_[slot]) return;   // an earlier microbatch's gradient: accumulated, not ready
  if (slot_ready_[slot]) return;  // a parameter used twice fires twice; count it once
  slot_ready_[slot] = true;
  --pending_[s.bucket];
  launch_ready_in_order(false);
}

void GradientReducer::launch_ready_in_order(bool from_finish) {
  // Every rank must reduce buckets in the same order, with the same call: start bucket i
  // only after 0..i-1, and choose blocking or non-blocking by where it was launched (a
  // backward hook or finish()), which depends on the model, not on timing.
  bool any = false;
  while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) {
    queue_.push_back(Launch{next_launch_++, from_finish, {}, {}});
    any = true;
  }
  if (any) cv_.notify_all();
}

void GradientReducer::drive(const std::function<bool()>& test) {
  while (!test()) {
    if (main_waiting_.load(std::memory_order_relaxed)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

void GradientReducer::reduce(std::size_t bucket, bool blocking) {
  if (sharded()) {
    reduce_shard(bucket, blocking);
    return;
  }
  const double t0 = wall_seconds();
  auto& gradients = buckets_[bucket];
  if (nccl_ != nullptr) {
    // Queued on NCCL's stream after the compute work; finish() waits for it.
    nccl_->allreduce_sum_async(gradients);
    std::lock_guard<std::mutex> lock(mutex_);
    times_.total_seconds += wall_seconds() - t0;
    times_.bytes += gradients.numel() * static_cast<std::int64_t>(sizeof(float));
    return;
  }
  // GPU buckets with MPI: staged through page-locked host memory (the copies run on the
  // device's default stream, after the backward work that produced the gradients).
  torch::Tensor b = gradients;
  if (gradients.is_cuda()) {
    if (!host_[bucket].defined()) {
      host_[bucket] = torch::empty({gradients.numel()}, torch::TensorOptions(torch::kFloat).pinned_memory(true));
    }
    b = host_[bucket];
    b.copy_(gradients);
  }
  if (!overlap_ || blocking) {
    // Launched after backward (nothing left to overlap with): MPI's blocking allreduce
    // uses its fastest algorithm.
    if (hierarchical_) {
      hierarchical_->sum(b.data_ptr<float>(), static_cast<std::size_t>(b.numel()));
    } else {
      comm_.allreduce_sum(b.data_ptr<float>(), static_cast<std::size_t>(b.numel()));
    }
  } else if (hierarchical_) {
    auto op = hierarchical_->start(b.data_ptr<float>(), static_cast<std::size_t>(b.numel()));
    drive([&] { return op.test(); });
  } else {
    // Backward still runs and shares this core (ranks are bound to cores): instead of
    // MPI's busy wait, drive progress with MPI_Test and sleep briefly between tests; poll
    // without sleeping once the main thread waits. Large buckets go round a ring
    // (comm/RingSum.hpp, docs/benchmarks.md "The overlapped reduction's sum").
    SumInFlight sum(comm_, b.data_ptr<float>(), static_cast<std::size_t>(b.numel()), ring_scratch_);
    drive([&] { return sum.test(); });
  }
  if (gradients.is_cuda()) gradients.copy_(b);
  const double dt = wall_seconds() - t0;
  std::lock_guard<std::mutex> lock(mutex_);
  times_.total_seconds += dt;
  times_.bytes += b.numel() * static_cast<std::int64_t>(sizeof(float));
}

void GradientReducer::worker_loop() {
  while (true) {
    Launch job{};
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = queue_.front();
      queue_.pop_front();
    }
    try {
      if (job.task) {
        job.task();
        continue;  // a window's gather: it signals its own completion
      } else if (job.values.defined()) {
        sum_now(job.values);
      } else {
        reduce(job.bucket, job.blocking);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (job.values.defined()) {
        ++sums_done_;
      } else {
        ++done_;
      }
    }
    cv_.notify_all();
  }
}

void GradientReducer::sum_now(torch::Tensor& values) {
  if (values.is_cuda()) {
    nccl_->allreduce_sum_async(values);  // after the compute work that produced `values`
  } else if (values.scalar_type() == torch::kDouble) {
    comm_.allreduce_sum(values.data_ptr<double>(), static_cast<std::size_t>(values.numel()));
  } else {
    comm_.allreduce_sum(values.data_ptr<float>(), static_cast<std::size_t>(values.numel()));
  }
}

void GradientReducer::sum_in_order(torch::Tensor& values) {
  if (comm_.size() == 1) return;
  if (!values.is_contiguous() || values.dim() != 1 ||
      (values.scalar_type() != torch::kDouble && values.scalar_type() != torch::kFloat)) {
    throw std::logic_error("GradientReducer::sum_in_order: needs a contiguous 1-D float32 or float64 tensor");
  }
  // A GPU tensor without NCCL goes through host memory, copied here on the caller's stream
  // (a few hundred bytes; the copy waits for the GPU). The worker sees host tensors, or GPU
  // tensors for NCCL.
  const bool nccl = nccl_ != nullptr && values.is_cuda();
  torch::Tensor work = values.is_cuda() && !nccl ? values.to(torch::kCPU) : values;
  if (!worker_.joinable()) {
    sum_now(work);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto ticket = ++sums_queued_;
    queue_.push_back(Launch{0, true, work, {}});
    cv_.notify_all();
    main_waiting_ = true;  // the worker polls a bucket still in flight without sleeping
    cv_.wait(lock, [&] { return sums_done_ >= ticket || error_; });
    main_waiting_ = false;
    if (error_) std::rethrow_exception(error_);
  }
  if (nccl) {
    // The work queued next on the compute stream waits for the sum (no host wait; a peer
    // that never answers shows in finish()'s deadline).
    nccl_->order_compute_after();
  } else if (work.data_ptr() != values.data_ptr()) {
    values.copy_(work);
  }
}

void GradientReducer::follow_current_stream() {
  if (nccl_ != nullptr) nccl_->capture_compute_stream();
}

void GradientReducer::after_replay() {
  if (nccl_ == nullptr) return;
  nccl_->replayed();
  nccl_->wait();
  // The replay reduced every bucket (its time is inside the step's: not counted).
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& b : buckets_) times_.bytes += b.numel() * static_cast<std::int64_t>(sizeof(float));
}

void GradientReducer::finish() {
  // One rank reduces nothing, unless NCCL was asked for (comm.backend=nccl): then its
  // one-rank communicator runs the same path as many ranks do.
  if (comm_.size() == 1 && nccl_ == nullptr) return;
  const double t0 = wall_seconds();
  if (!overlap_) {
    for (std::size_t b = 0; b < buckets_.size(); ++b) reduce(b, true);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    main_waiting_ = true;
    // Gradients that never arrived (parameters unused this step) are zero: start them too.
    for (auto& p : pending_) p = 0;
    launch_ready_in_order(true);
    cv_.wait(lock, [&] { return done_ == buckets_.size() || error_; });
    main_waiting_ = false;
    if (error_) std::rethrow_exception(error_);
  }
  if (nccl_ != nullptr) {
    const double w0 = wall_seconds();
    nccl_->wait();
    std::lock_guard<std::mutex> lock(mutex_);
    times_.total_seconds += wall_seconds() - w0;  // the reductions' tail the host waited for
  }
  std::lock_guard<std::mutex> lock(mutex_);
  times_.exposed_seconds += wall_seconds() - t0;
}

ReducerTimes GradientReducer::times() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return times_;
}

const std::vector<torch::Tensor>& GradientReducer::buckets() const {
  if (sharded()) return shard_gradients_;
  if (!direct_) return buckets_;
  direct_grads_.clear();
  for (const auto& p : direct_params_) {
    if (p.grad().defined()) direct_grads_.push_back(p.grad());
  }
  return direct_grads_;
}

void GradientReducer::clip_to_norm(double max_norm) {
  const auto& gradients = buckets();
  if (gradients.empty()) return;
  torch::NoGradGuard no_grad;
  auto norm = torch::stack(torch::_foreach_norm(gradients)).norm();
  if (sharded()) {
    // Each rank holds other elements: sum the squares over the ranks (padding adds zeros).
    auto squares = norm.to(torch::kDouble).square().reshape({1});
    sum_in_order(squares);
    norm = squares.sqrt().reshape({}).to(torch::kFloat);
  }
  // 1 when the norm is within the bound: the gradients are multiplied by exactly 1.
  const auto factor = norm.add(1e-6).reciprocal().mul(max_norm).clamp_max(1.0);
  torch::_foreach_mul_(gradients, factor);
}

std::int64_t GradientReducer::element_count() const {
  std::int64_t n = 0;
  if (direct_) {
    for (const auto& p : direct_params_) n += p.numel();
  } else {
    for (auto count : padded_) n += count;
  }
  return n;
}

void broadcast_module_state(torch::nn::Module& module, const Communicator& comm, int root) {
  if (comm.size() == 1) return;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p);
  for (auto& b : module.buffers()) tensors.push_back(b);
  torch::NoGradGuard no_grad;
  // Float tensors fused into broadcasts of at most kPiece elements (a tensor past that alone),
  // so the staging buffer stays small beside a large model; other dtypes (BatchNorm's counter)
  // go one by one.
  constexpr std::int64_t kPiece = std::int64_t{16} << 20;
  std::size_t begin = 0;
  while (begin < tensors.size()) {
    std::size_t end = begin;
    std::int64_t n = 0;
    while (end < tensors.size() &&
           (end == begin || tensors[end].scalar_type() != torch::kFloat || n + tensors[end].numel() <= kPiece)) {
      if (tensors[end].scalar_type() == torch::kFloat) n += tensors[end].numel();
      ++end;
    }
    auto flat = torch::empty({n}, torch::kFloat);
    std::int64_t off = 0;
    for (std::size_t i = begin; i < end; ++i) {
      if (tensors[i].scalar_type() != torch::kFloat) continue;
      flat.narrow(0, off, tensors[i].numel()).copy_(tensors[i].reshape({-1}));
      off += tensors[i].numel();
    }
    comm.broadcast(flat.data_ptr<float>(), static_cast<std::size_t>(n) * sizeof(float), root);
    off = 0;
    for (std::size_t i = begin; i < end; ++i) {
      auto& t = tensors[i];
      if (t.scalar_type() == torch::kFloat) {
        t.copy_(flat.narrow(0, off, t.numel()).view(t.sizes()));
        off += t.numel();
      } else {
        auto c = t.to(torch::kCPU).contiguous();
        comm.broadcast(c.data_ptr(), static_cast<std::size_t>(c.numel() * c.element_size()), root);
        t.copy_(c);
      }
    }
    begin = end;
  }
}

void average_module_buffers(torch::nn::Module& module, const Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<torch::Tensor> buffers;
  std::int64_t n = 0;
  for (auto& b : module.buffers()) {
    if (b.scalar_type() != torch::kFloat) continue;
    buffers.push_back(b);
    n += b.numel();
  }
  if (n == 0) return;
  torch::NoGradGuard no_grad;
  auto flat = torch::empty({n}, torch::kFloat);
  std::int64_t off = 0;
  for (const auto& b : buffers) {
    flat.narrow(0, off, b.numel()).copy_(b.reshape({-1}));
    off += b.numel();
  }
  comm.allreduce_sum(flat.data_ptr<float>(), static_cast<std::size_t>(n));
  flat.div_(static_cast<double>(comm.size()));
  off = 0;
  for (auto& b : buffers) {
    b.copy_(flat.narrow(0, off, b.numel()).view(b.sizes()));
    off += b.numel();
  }
}

}  // namespace hpctrain
