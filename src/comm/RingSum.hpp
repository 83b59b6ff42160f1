#pragma once
// A non-blocking sum in place over every rank of a communicator as a ring of point-to-point
// messages: reduce-scatter, then all-gather (P - 1 steps each; chunk k = values
// [k n/P, (k+1) n/P)). Each rank sends and receives 2 (P - 1)/P of the data, at the same
// time, the least any allreduce moves per rank.
//
// Why not MPI_Iallreduce: Open MPI's non-blocking allreduce (libnbc) reduces to one rank and
// broadcasts back whenever the buffer is in place or there are fewer than 4 ranks, which
// moves the data twice, one direction at a time: between two nodes at 1 Gbit/s a 3.7 MB
// gradient took 56 ms that way, twice the link's time (docs/benchmarks.md).
//
// Every rank ends with the same bits: each chunk is summed on one rank, in ring order, and
// copied to the others. One sum at a time per communicator.
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

// Whether a non-blocking sum of `bytes` over `ranks` should be a RingSum: each ring message
// carries at least 32 KiB (below, MPI_Iallreduce's fewer, latency-bound steps win) and at most
// what one MPI message of bytes can (INT_MAX; above, MPI_Iallreduce counts floats).
inline bool ring_pays_for(std::int64_t bytes, int ranks) {
  return ranks > 1 && bytes >= std::int64_t{32 * 1024} * ranks && bytes / ranks + 8 <= INT_MAX;
}

// The whole sum, or one of its halves: after ReduceScatter rank r holds the sum of chunk
// owned_chunk(r) only (the others are partial); AllGather starts from there.
enum class RingPart { All, ReduceScatter, AllGather };

class RingSum {
 public:
  // Starts the first step; `data` and `scratch` (grown to a chunk, kept by the caller so
  // that every sum does not fault in fresh pages) must outlive the sum.
  RingSum(const Communicator& comm, float* data, std::size_t count, std::vector<float>& scratch,
          RingPart part = RingPart::All);
  // Values [first, first + count) of `count` values over `size` ranks: rank r's summed chunk
  // after the reduce-scatter half.
  struct Span {
    std::size_t first = 0, count = 0;
  };
  static Span owned_chunk(std::size_t count, int rank, int size);
  bool test();  // drives the current step; true once all 2 (P - 1) steps are done
  void wait();  // test() until done

 private:
  std::size_t begin(int chunk) const;
  std::size_t length(int chunk) const { return begin(chunk + 1) - begin(chunk); }
  int wrap(int chunk) const { return ((chunk % size_) + size_) % size_; }
  void post();  // start step_'s send and receive

  const Communicator& comm_;
  float* data_;
  std::size_t count_;
  int size_, rank_;
  int step_ = 0, end_ = 0;  // steps [step_, end_) of [0, 2 (P - 1)) are left
  int reducing_ = -1;       // the chunk the outstanding receive adds into (reduce-scatter steps)
  float* scratch_ = nullptr;
  Request send_, recv_;
};

// A non-blocking sum in place over `comm` as the overlapped paths run it: a RingSum where
// ring_pays_for says so, else MPI_Iallreduce. The same choice on every rank (size and count).
class SumInFlight {
 public:
  SumInFlight(const Communicator& comm, float* data, std::size_t count, std::vector<float>& scratch);
  bool test() { return ring_ ? ring_->test() : request_.test(); }

 private:
  std::unique_ptr<RingSum> ring_;
  Request request_;
};

}  // namespace hpctrain
