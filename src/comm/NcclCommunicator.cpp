#include "comm/NcclCommunicator.hpp"

#include <chrono>
#include <stdexcept>
#include <thread>

#include "launch/Mpi.hpp"
#include "util/Error.hpp"

#if HPCTRAIN_WITH_NCCL
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace hpctrain {

#if HPCTRAIN_WITH_NCCL

namespace {
void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress) {
    throw RuntimeFailure(std::string("NCCL ") + what + ": " + ncclGetErrorString(r) +
                         (r == ncclSystemError || r == ncclRemoteError
                              ? " (a peer failed or the network is down; NCCL_DEBUG=WARN says more)"
                              : ""));
  }
}
}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  torch::Device device;
  c10::cuda::CUDAStream stream;
  c10::cuda::CUDAStream compute;
  at::cuda::CUDAEvent compute_ready;
  at::cuda::CUDAEvent reduced;
  at::cuda::CUDAEvent summed;  // order_compute_after()
  double timeout_seconds;
  bool aborted = false;
  bool pending = false;
  bool replay = false;  // `reduced` marks a replayed graph's end (replayed())

  Impl(const torch::Device& d, double timeout)
      : device(d),
        stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, d.index())),
        compute(c10::cuda::getCurrentCUDAStream(d.index())),
        timeout_seconds(timeout) {}

  void abort() {
    if (comm != nullptr && !aborted) {
      ncclCommAbort(comm);
      aborted = true;
    }
  }
};

NcclCommunicator::NcclCommunicator(const Communicator& mpi, const torch::Device& device, double timeout_seconds)
    : impl_(std::make_unique<Impl>(device, timeout_seconds)) {
  if (!device.is_cuda()) throw ConfigError("comm.backend=nccl: NCCL reduces GPU tensors; set device.type=cuda or auto");
  c10::cuda::CUDAGuard guard(device.index());
  // Rank 0's id and whether it got one: every rank learns a failure from the same broadcast.
  struct {
    ncclUniqueId id;
    int ok;
  } message{};
  if (mpi.rank() == 0) message.ok = ncclGetUniqueId(&message.id) == ncclSuccess ? 1 : 0;
  mpi.broadcast(&message, sizeof(message), 0);
  if (!message.ok) throw RuntimeFailure("NCCL: rank 0 could not create the communicator's unique id");
  ncclUniqueId id = message.id;
  // Nonblocking init: a rank that never joins (it failed after the broadcast) shows up as a
  // timeout, not a hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  nccl_check(ncclCommInitRankConfig(&impl_->comm, mpi.size(), id, mpi.rank(), &config), "init");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  ncclResult_t state = ncclInProgress;
  while (state == ncclInProgress) {
    nccl_check(ncclCommGetAsyncError(impl_->comm, &state), "init");
    if (state == ncclInProgress && std::chrono::steady_clock::now() > deadline) {
      impl_->abort();
      throw RuntimeFailure("NCCL init: the ranks did not all join within " + std::to_string(timeout_seconds) +
                           " s (comm.nccl_timeout); a rank may have failed before reaching it");
    }
    if (state == ncclInProgress) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (state != ncclSuccess) {
    impl_->abort();
    nccl_check(state, "init");
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (impl_->comm == nullptr) return;
  if (impl_->aborted) return;
  if (impl_->pending || std::uncaught_exceptions() > 0) {
    ncclCommAbort(impl_->comm);  // never wait on a peer that may be gone
  } else {
    ncclCommDestroy(impl_->comm);
  }
}

void NcclCommunicator::capture_compute_stream() {
  impl_->compute = c10::cuda::getCurrentCUDAStream(impl_->device.index());
}

namespace {
ncclDataType_t nccl_type(const torch::Tensor& t, const char* what) {
  if (t.scalar_type() == torch::kDouble) return ncclDouble;
  if (t.scalar_type() != torch::kFloat)
    throw std::logic_error(std::string("NcclCommunicator::") + what + ": float32 or float64 tensors only");
  return ncclFloat;
}
}  // namespace

// Queues `call` on the communication stream after the captured compute work, and waits
// with the deadline until NCCL has it on the stream. `tensors` are the buffers it uses.
template <class Call>
void NcclCommunicator::enqueue(const char* what, const std::vector<const torch::Tensor*>& tensors, Call&& call) {
  Impl& m = *impl_;
  if (m.aborted) throw RuntimeFailure("NCCL: the communicator was aborted after an earlier error");
  c10::cuda::CUDAGuard guard(m.device.index());
  // The inputs were queued on the compute stream: the collective waits for them there.
  m.compute_ready.record(m.compute);
  m.compute_ready.block(m.stream);
  nccl_check(call(m.comm, m.stream.stream()), what);
  // A nonblocking communicator may return before the operation is on the stream (while it
  // connects): wait, with the deadline, until it is, so the events below order it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(m.timeout_seconds);
  for (ncclResult_t state = ncclInProgress; state == ncclInProgress;) {
    nccl_check(ncclCommGetAsyncError(m.comm, &state), what);
    if (state != ncclSuccess && state != ncclInProgress) {
      m.abort();
      nccl_check(state, what);
    }
    if (state == ncclInProgress && std::chrono::steady_clock::now() > deadline) {
      m.abort();
      throw RuntimeFailure(std::string("NCCL ") + what + " was not enqueued within " +
                           std::to_string(m.timeout_seconds) + " s (comm.nccl_timeout); the communicator was aborted");
    }
  }
  // The caching allocator must not reuse the buffers' memory before this stream is done.
  for (const torch::Tensor* t : tensors)
    c10::cuda::CUDACachingAllocator::recordStream(t->storage().data_ptr(), m.stream);
  m.pending = true;
}

void NcclCommunicator::allreduce_sum_async(const torch::Tensor& tensor) {
  const ncclDataType_t type = nccl_type(tensor, "allreduce_sum_async");
  enqueue("allreduce", {&tensor}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<std::size_t>(tensor.numel()), type, ncclSum,
                         comm, stream);
  });
}

void NcclCommunicator::reduce_scatter_sum_async(const torch::Tensor& full, const torch::Tensor& shard) {
  const ncclDataType_t type = nccl_type(full, "reduce_scatter_sum_async");
  enqueue("reduce-scatter", {&full, &shard}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclReduceScatter(full.data_ptr(), shard.data_ptr(), static_cast<std::size_t>(shard.numel()), type, ncclSum,
                             comm, stream);
  });
}

void NcclCommunicator::allgather_async(const torch::Tensor& flat, std::int64_t chunk, int rank) {
  const ncclDataType_t type = nccl_type(flat, "allgather_async");
  enqueue("all-gather", {&flat}, [&](ncclComm_t comm, cudaStream_t stream) {
    // In place: this rank's chunk sits at its offset of the output.
    const auto* mine = static_cast<const char*>(flat.data_ptr()) + flat.element_size() * chunk * rank;
    return ncclAllGather(mine, flat.data_ptr(), static_cast<std::size_t>(chunk), type, comm, stream);
  });
}

void NcclCommunicator::exchange_async(const std::vector<PeerTransfer>& transfers) {
  std::vector<const torch::Tensor*> used;
  for (const auto& t : transfers) {
    if (!t.tensor.is_contiguous()) throw std::logic_error("NcclCommunicator::exchange_async: a non-contiguous tensor");
    used.push_back(&t.tensor);
  }
  enqueue("send/receive", used, [&](ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = ncclGroupStart();
    for (const auto& t : transfers) {
      if (r != ncclSuccess && r != ncclInProgress) break;
      const auto bytes = static_cast<std::size_t>(t.tensor.nbytes());
      r = t.send ? ncclSend(t.tensor.data_ptr(), bytes, ncclUint8, t.peer, comm, stream)
                 : ncclRecv(t.tensor.data_ptr(), bytes, ncclUint8, t.peer, comm, stream);
    }
    const ncclResult_t end = ncclGroupEnd();
    return r != ncclSuccess && r != ncclInProgress ? r : end;
  });
}

void NcclCommunicator::order_compute_after() {
  Impl& m = *impl_;
  if (!m.pending) return;
  c10::cuda::CUDAGuard guard(m.device.index());
  m.summed.record(m.stream);
  m.summed.block(m.compute);
}

void NcclCommunicator::replayed() {
  Impl& m = *impl_;
  if (m.aborted) throw RuntimeFailure("NCCL: the communicator was aborted after an earlier error");
  c10::cuda::CUDAGuard guard(m.device.index());
  m.reduced.record(c10::cuda::getCurrentCUDAStream(m.device.index()));
  m.pending = m.replay = true;
}

void NcclCommunicator::wait() {
  Impl& m = *impl_;
  if (!m.pending) return;
  c10::cuda::CUDAGuard guard(m.device.index());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(m.compute.stream(), &capture) != cudaSuccess) {
    throw RuntimeFailure("NCCL: cannot tell whether the compute stream is being captured");
  }
  if (capture != cudaStreamCaptureStatusNone) {
    // Captured: the graph orders the compute work after the reductions (an event waited for
    // in the capture joins the communication stream back into it); replayed() and the next
    // wait() check each replay on the host.
    m.reduced.record(m.stream);
    m.reduced.block(m.compute);
    m.pending = m.replay = false;
    return;
  }
  // A replay's end was recorded on the stream it ran on; otherwise the reductions' end.
  if (!m.replay) m.reduced.record(m.stream);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(m.timeout_seconds);
  while (!m.reduced.query()) {
    ncclResult_t state = ncclSuccess;
    nccl_check(ncclCommGetAsyncError(m.comm, &state), "allreduce");
    if (state != ncclSuccess && state != ncclInProgress) {
      m.abort();
      nccl_check(state, "allreduce");
    }
    if (std::chrono::steady_clock::now() > deadline) {
      m.abort();
      throw RuntimeFailure(std::string(m.replay ? "the replayed training step (device.cuda_graphs) with its NCCL "
                                                  "reductions"
                                                : "NCCL allreduce") +
                           " did not complete within " + std::to_string(m.timeout_seconds) +
                           " s (comm.nccl_timeout): a peer stopped answering; the communicator was aborted");
    }
    std::this_thread::yield();
  }
  if (!m.replay) m.reduced.block(m.compute);
  m.pending = m.replay = false;
}

std::string NcclCommunicator::version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "";
  const int major = v / 10000, minor = (v % 10000) / 100, patch = v % 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

#else  // no NCCL compiled in

struct NcclCommunicator::Impl {};

NcclCommunicator::NcclCommunicator(const Communicator&, const torch::Device&, double) {
  throw ConfigError(
      "comm.backend=nccl: this build has no NCCL (build against a CUDA LibTorch with NCCL installed; "
      "`hpctrain --version` tells what was compiled in)");
}
NcclCommunicator::~NcclCommunicator() = default;
void NcclCommunicator::capture_compute_stream() {}
void NcclCommunicator::allreduce_sum_async(const torch::Tensor&) {}
void NcclCommunicator::reduce_scatter_sum_async(const torch::Tensor&, const torch::Tensor&) {}
void NcclCommunicator::allgather_async(const torch::Tensor&, std::int64_t, int) {}
void NcclCommunicator::exchange_async(const std::vector<PeerTransfer>&) {}
void NcclCommunicator::order_compute_after() {}
void NcclCommunicator::wait() {}
void NcclCommunicator::replayed() {}
std::string NcclCommunicator::version() {
  return "";
}

#endif

}  // namespace hpctrain
