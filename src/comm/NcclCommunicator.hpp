#pragma once
// NCCL behind the data-parallel reducer: one NCCL communicator per MPI communicator (world,
// cross-validation group), its unique id made on rank 0 and sent over MPI. Reductions run on
// a dedicated CUDA stream, ordered after the compute stream's work with an event; the host
// waits for them with a deadline and checks NCCL's asynchronous errors, and on an error or a
// peer that never answers the communicator is aborted, so the job ends with a message
// instead of hanging in a kernel. Compiled when LibTorch is a CUDA build and NCCL is found
// (HPCTRAIN_WITH_NCCL); otherwise construction throws.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

class NcclCommunicator {
 public:
  // Collective over `mpi`: every rank joins on its own GPU `device`.
  NcclCommunicator(const Communicator& mpi, const torch::Device& device, double timeout_seconds);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // Records where the compute stream stands; reductions queued later wait for it. Call on
  // the thread that runs forward (the compute stream is per thread).
  void capture_compute_stream();
  // Sums `tensor` (float32 or float64, contiguous, on the device) over the ranks in place, on
  // the communication stream after the captured compute work. Returns at once.
  void allreduce_sum_async(const torch::Tensor& tensor);
  // Sharded data parallelism: rank r receives in `shard` the sum of `full`'s r-th slice of
  // shard.numel() values; and `flat` (size x chunk values) receives every rank's chunk,
  // this rank's (`rank`) read in place. Same stream and ordering as allreduce_sum_async.
  void reduce_scatter_sum_async(const torch::Tensor& full, const torch::Tensor& shard);
  void allgather_async(const torch::Tensor& flat, std::int64_t chunk, int rank);
  // Pipeline messages: one NCCL group of sends and receives of the tensors' bytes (any dtype,
  // contiguous, on the device), queued after the captured compute work; returns at once.
  // Operations between two ranks meet in the order both issue them (no tags): the caller's
  // order must pair them (train/PipelineGroups.hpp checks the pipeline's).
  struct PeerTransfer {
    torch::Tensor tensor;
    int peer = 0;
    bool send = false;
  };
  void exchange_async(const std::vector<PeerTransfer>& transfers);
  // Makes the compute stream's later work wait for every reduction queued so far, on the
  // device (the host goes on; wait() still checks them against the deadline).
  void order_compute_after();
  // Waits on the host for every queued reduction, checking NCCL's asynchronous error state;
  // aborts the communicator and throws RuntimeFailure on an error or after the deadline.
  // Afterwards the compute stream is ordered after the reductions. While the compute stream
  // is being captured into a CUDA graph (device.cuda_graphs) the host cannot wait for what
  // it queued: the compute stream is ordered after the reductions on the device only.
  void wait();
  // device.cuda_graphs: a graph holding this communicator's operations was replayed on the
  // calling thread's current stream; the next wait() waits for that replay, as above.
  void replayed();

  static std::string version();  // "2.28.9", or "" without NCCL

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  template <class Call>
  void enqueue(const char* what, const std::vector<const torch::Tensor*>& tensors, Call&& call);
};

}  // namespace hpctrain
