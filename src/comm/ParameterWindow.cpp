#include "comm/ParameterWindow.hpp"

#include <c10/core/Allocator.h>
#include <c10/core/StorageImpl.h>
#include <sys/mman.h>

#include <algorithm>
#include <string>

#include "comm/GradientReducer.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Gives `t`'s storage `bytes` bytes (contents undefined), or none: on the CPU pages of the OS's,
// on a GPU from the storage's allocator. Every view of the storage (the parameters) keeps its
// shape, strides and identity.
void set_storage_bytes(const torch::Tensor& t, std::size_t bytes) {
  c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
  if (storage->nbytes() == bytes) return;
  if (t.is_cpu()) {
    storage->set_data_ptr_noswap(os_pages(bytes));
  } else {
    storage->set_data_ptr_noswap(storage->allocator()->allocate(bytes));
  }
  storage->set_nbytes(bytes);
}

std::size_t flat_bytes(const ShardBucket& shard) {
  return static_cast<std::size_t>(shard.flat.numel()) * shard.flat.element_size();
}

}  // namespace

c10::DataPtr os_pages(std::size_t bytes) {
  if (bytes == 0) return c10::DataPtr(nullptr, c10::Device(c10::kCPU));
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    throw RuntimeFailure("out of memory: " + std::to_string(bytes >> 20) +
                         " MiB for gathered parameters (parallel.shard=parameters) could not be mapped");
  }
  return c10::InefficientStdFunctionContext::makeDataPtr(
      p, [bytes](void* q) { ::munmap(q, bytes); }, c10::Device(c10::kCPU));
}

ParameterWindow::ParameterWindow(std::vector<ShardBucket>& shards, std::vector<std::int64_t> groups,
                                 std::vector<std::size_t> slots, WindowIo io)
    : shards_(shards), groups_(std::move(groups)), io_(std::move(io)), state_(shards.size(), State::Gathered) {
  for (auto n : slots) arrived_.emplace_back(n, false);
  arrived_count_.assign(shards.size(), 0);
  for (const auto& shard : shards_) bytes_ += static_cast<std::int64_t>(flat_bytes(shard));
}

bool ParameterWindow::mark(std::size_t b) {
  if (state_[b] != State::Freed) return false;
  state_[b] = State::Pending;
  bytes_ += static_cast<std::int64_t>(flat_bytes(shards_[b]));
  if (whole_depth_ == 0) peak_ = std::max(peak_, bytes_);  // training's window, not a checkpoint's
  return true;
}

void ParameterWindow::launch(const std::vector<std::size_t>& buckets) {
  // Outside mutex_: without a communication thread the task runs here.
  for (const std::size_t b : buckets) {
    // Allocated here, so an allocation failure shows on the thread that runs the model.
    set_storage_bytes(shards_[b].flat, flat_bytes(shards_[b]));
    io_.enqueue([this, b] {
      std::exception_ptr error;
      try {
        torch::NoGradGuard no_grad;
        ShardBucket& s = shards_[b];
        s.flat.narrow(0, s.offset, s.chunk).copy_(s.parameters);
        io_.gather(b);
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        state_[b] = State::Gathered;
        if (error && !error_) error_ = error;
      }
      cv_.notify_all();
    });
  }
}

std::vector<std::size_t> ParameterWindow::mark_group(std::int64_t group, bool all) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (all && whole_depth_++ > 0) return {};
  std::vector<std::size_t> marked;
  for (std::size_t b = 0; b < shards_.size(); ++b) {
    if ((all || groups_[b] == group) && mark(b)) marked.push_back(b);
  }
  return marked;
}

void ParameterWindow::wait_group(std::int64_t group, bool all) {
  std::unique_lock<std::mutex> lock(mutex_);
  for (std::size_t b = 0; b < shards_.size(); ++b) {
    if (all || groups_[b] == group) wait_for(b, lock);
  }
}

void ParameterWindow::wait_for(std::size_t b, std::unique_lock<std::mutex>& lock) {
  if (state_[b] == State::Pending) {
    io_.waiting(true);
    cv_.wait(lock, [&] { return state_[b] != State::Pending; });
    io_.waiting(false);
  }
  if (error_) std::rethrow_exception(error_);
}

void ParameterWindow::release(std::size_t b, bool write_back) {
  if (state_[b] != State::Gathered) return;
  ShardBucket& shard = shards_[b];
  if (write_back) {
    torch::NoGradGuard no_grad;
    shard.parameters.copy_(shard.flat.narrow(0, shard.offset, shard.chunk));
  }
  set_storage_bytes(shard.flat, 0);
  state_[b] = State::Freed;
  bytes_ -= static_cast<std::int64_t>(flat_bytes(shard));
  forget_arrivals(b);
}

void ParameterWindow::forget_arrivals(std::size_t b) {
  arrived_count_[b] = 0;
  std::fill(arrived_[b].begin(), arrived_[b].end(), false);
}

void ParameterWindow::gather(std::int64_t group) {
  launch(mark_group(group, false));
  wait_group(group, false);
}

void ParameterWindow::prefetch(std::int64_t group) {
  launch(mark_group(group, false));
}

void ParameterWindow::free(std::int64_t group) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (whole_depth_ > 0) return;
  for (std::size_t b = 0; b < shards_.size(); ++b) {
    if (groups_[b] != group) continue;
    wait_for(b, lock);
    release(b, false);
  }
}

void ParameterWindow::gather_all() {
  launch(mark_group(0, true));
  wait_group(0, true);
}

void ParameterWindow::free_all(bool write_back) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (whole_depth_ > 0 && --whole_depth_ > 0) return;
  release_every(write_back, lock);
}

void ParameterWindow::free_gathered() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (whole_depth_ == 0) release_every(false, lock);
}

void ParameterWindow::release_every(bool write_back, std::unique_lock<std::mutex>& lock) {
  for (std::size_t b = 0; b < shards_.size(); ++b) {
    // A prefetch still in flight finishes first (its task writes the buffer).
    if (state_[b] == State::Pending) cv_.wait(lock, [&] { return state_[b] != State::Pending; });
    release(b, write_back);
  }
}

void ParameterWindow::gradient_arrived(std::size_t bucket, std::size_t slot) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (arrived_[bucket][slot]) return;
  arrived_[bucket][slot] = true;
  if (++arrived_count_[bucket] == arrived_[bucket].size() && whole_depth_ == 0) release(bucket, false);
}

void ParameterWindow::new_step() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t b = 0; b < shards_.size(); ++b) forget_arrivals(b);
}

std::int64_t ParameterWindow::gathered_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

std::int64_t ParameterWindow::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_;
}

}  // namespace hpctrain
