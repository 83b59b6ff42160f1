#include "comm/RingSum.hpp"

namespace hpctrain {
namespace {
// One tag, used by no other point-to-point traffic of hpctrain (the monitor's 7301, the
// pipeline's on their own communicator): MPI matches the messages between two ranks in the
// order they were sent and the receives were posted, and every rank posts its steps in order.
constexpr int kTag = 7411;
}  // namespace

RingSum::RingSum(const Communicator& comm, float* data, std::size_t count, std::vector<float>& scratch, RingPart part)
    : comm_(comm),
      data_(data),
      count_(count),
      size_(comm.size()),
      rank_(comm.rank()),
      step_(part == RingPart::AllGather ? size_ - 1 : 0),
      end_(part == RingPart::ReduceScatter ? size_ - 1 : 2 * (size_ - 1)) {
  if (step_ < end_) {
    const std::size_t chunk = count / static_cast<std::size_t>(size_) + 1;
    if (scratch.size() < chunk) scratch.resize(chunk);
    scratch_ = scratch.data();
    post();
  }
}

RingSum::Span RingSum::owned_chunk(std::size_t count, int rank, int size) {
  const auto at = [&](int chunk) { return count * static_cast<std::size_t>(chunk) / static_cast<std::size_t>(size); };
  const int chunk = (rank + 1) % size;  // where the reduce-scatter's last step adds
  return {at(chunk), at(chunk + 1) - at(chunk)};
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
    recv_ = comm_.irecv(scratch_, length(in) * sizeof(float), left, kTag);
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
  while (step_ < end_) {
    if (!recv_.test() || !send_.test()) return false;
    if (reducing_ >= 0) {
      float* into = data_ + begin(reducing_);
      const float* from = scratch_;
      const std::size_t n = length(reducing_);
      for (std::size_t i = 0; i < n; ++i) into[i] += from[i];
    }
    if (++step_ < end_) post();
  }
  return true;
}

SumInFlight::SumInFlight(const Communicator& comm, float* data, std::size_t count, std::vector<float>& scratch) {
  if (ring_pays_for(static_cast<std::int64_t>(count * sizeof(float)), comm.size())) {
    ring_ = std::make_unique<RingSum>(comm, data, count, scratch);
  } else {
    request_ = comm.iallreduce_sum(data, count);
  }
}

void RingSum::wait() {
  while (!test()) {
  }
}

}  // namespace hpctrain
