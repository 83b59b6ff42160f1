#include "comm/RingSum.hpp"

namespace hpctrain {
namespace {
// One tag: MPI matches the messages between two ranks in the order they were sent and the
// receives were posted, and every rank posts its steps in order.
constexpr int kTag = 0;
}  // namespace

RingSum::RingSum(const Communicator& comm, float* data, std::size_t count)
    : comm_(comm), data_(data), count_(count), size_(comm.size()), rank_(comm.rank()) {
  if (size_ > 1) {
    scratch_.reset(new float[count / static_cast<std::size_t>(size_) + 1]);
    post();
  }
}

std::size_t RingSum::begin(int chunk) const {
  return count_ * static_cast<std::size_t>(chunk) / static_cast<std::size_t>(size_);
}

void RingSum::post() {
  const int right = (rank_ + 1) % size_, left = (rank_ + size_ - 1) % size_;
  const int last = size_ - 1;  // steps [0, P-1) reduce-scatter, [P-1, 2P-2) all-gather
  int out = 0, in = 0;
  if (step_ < last) {
    out = wrap(rank_ - step_);
    in = wrap(rank_ - step_ - 1);
    reducing_ = in;
    recv_ = comm_.irecv(scratch_.get(), length(in) * sizeof(float), left, kTag);
  } else {
    const int t = step_ - last;
    out = wrap(rank_ + 1 - t);
    in = wrap(rank_ - t);
    reducing_ = -1;
    recv_ = comm_.irecv(data_ + begin(in), length(in) * sizeof(float), left, kTag);
  }
  send_ = comm_.isend(data_ + begin(out), length(out) * sizeof(float), right, kTag);
}

bool RingSum::test() {
  const int steps = 2 * (size_ - 1);
  while (step_ < steps) {
    if (!recv_.test() || !send_.test()) return false;
    if (reducing_ >= 0) {
      float* into = data_ + begin(reducing_);
      const float* from = scratch_.get();
      const std::size_t n = length(reducing_);
      for (std::size_t i = 0; i < n; ++i) into[i] += from[i];
    }
    if (++step_ < steps) post();
  }
  return true;
}

void RingSum::wait() {
  while (!test()) {
  }
}

}  // namespace hpctrain
