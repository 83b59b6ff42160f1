#include "comm/Communicator.hpp"

#include <algorithm>
#include <climits>
#include <mutex>
#include <thread>

#include "comm/MpiLock.hpp"
#include "launch/Mpi.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// MPI counts are int: large buffers go in pieces.
constexpr std::size_t kMaxCount = std::size_t(1) << 30;

template <class T>
void allreduce_chunked(MPI_Comm comm, T* data, std::size_t count, MPI_Datatype type, MPI_Op op) {
  for (std::size_t off = 0; off < count; off += kMaxCount) {
    const int n = static_cast<int>(std::min(kMaxCount, count - off));
    HPCTRAIN_MPI(MPI_Allreduce(MPI_IN_PLACE, data + off, n, type, op, comm));
  }
}

}  // namespace

// MPI runs MPI_THREAD_SERIALIZED: the gradient reducer's thread and the main thread may both
// call it, never at once. Non-blocking calls and their tests take this lock, so a pipeline's
// point-to-point traffic on the main thread can run while the reducer's thread reduces
// buckets. Blocking collectives do not: the main thread calls them only while the reducer's
// thread is idle, and the reducer's own blocking reductions run while the main thread waits
// for it in finish().
std::mutex& nonblocking_mutex() {
  static std::mutex m;
  return m;
}

namespace {

// Completes `request` by testing under the lock, never blocking inside MPI with it held.
void wait_for(MPI_Request& request) {
  while (request != MPI_REQUEST_NULL) {
    int done = 0;
    {
      std::lock_guard<std::mutex> lock(nonblocking_mutex());
      HPCTRAIN_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    }
    if (done != 0) return;
    std::this_thread::yield();
  }
}

// The same for destructors: an MPI error ends the wait instead of throwing.
void finish_quietly(MPI_Request& request) noexcept {
  while (request != MPI_REQUEST_NULL) {
    int done = 0;
    int rc = MPI_SUCCESS;
    {
      std::lock_guard<std::mutex> lock(nonblocking_mutex());
      rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS || done != 0) return;
    std::this_thread::yield();
  }
}

}  // namespace

Request& Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    if (MpiRuntime::initialized()) finish_quietly(request_);
    request_ = o.request_;
    o.request_ = MPI_REQUEST_NULL;
  }
  return *this;
}

Request::~Request() {
  if (MpiRuntime::initialized()) finish_quietly(request_);
}

bool Request::test() {
  if (request_ == MPI_REQUEST_NULL) return true;
  int done = 0;
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
  return done != 0;
}

void Request::wait() {
  wait_for(request_);
}

Request Communicator::iallreduce_sum(float* data, std::size_t count) const {
  if (count > static_cast<std::size_t>(INT_MAX)) throw RuntimeFailure("iallreduce_sum: bucket too large for one call");
  MPI_Request r = MPI_REQUEST_NULL;
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_, &r));
  return Request(r);
}

namespace {
int byte_count(std::size_t bytes, const char* what) {
  if (bytes > static_cast<std::size_t>(INT_MAX)) {
    throw RuntimeFailure(std::string(what) + ": a message of " + std::to_string(bytes) +
                         " bytes is over MPI's 2 GiB count limit (use more pipeline microbatches)");
  }
  return static_cast<int>(bytes);
}
}  // namespace

Request Communicator::isend(const void* data, std::size_t bytes, int dest, int tag) const {
  MPI_Request r = MPI_REQUEST_NULL;
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Isend(data, byte_count(bytes, "isend"), MPI_BYTE, dest, tag, comm_, &r));
  return Request(r);
}

Request Communicator::irecv(void* data, std::size_t bytes, int source, int tag) const {
  MPI_Request r = MPI_REQUEST_NULL;
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Irecv(data, byte_count(bytes, "irecv"), MPI_BYTE, source, tag, comm_, &r));
  return Request(r);
}

Communicator::Communicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  HPCTRAIN_MPI(MPI_Comm_rank(comm_, &rank_));
  HPCTRAIN_MPI(MPI_Comm_size(comm_, &size_));
}

Communicator Communicator::world() {
  return Communicator(MPI_COMM_WORLD, false);
}

Communicator::Communicator(Communicator&& other) noexcept
    : comm_(other.comm_), owned_(other.owned_), rank_(other.rank_), size_(other.size_) {
  other.comm_ = MPI_COMM_NULL;
  other.owned_ = false;
}

Communicator& Communicator::operator=(Communicator&& other) noexcept {
  if (this != &other) {
    if (owned_ && comm_ != MPI_COMM_NULL && MpiRuntime::initialized()) MPI_Comm_free(&comm_);
    comm_ = other.comm_;
    owned_ = other.owned_;
    rank_ = other.rank_;
    size_ = other.size_;
    other.comm_ = MPI_COMM_NULL;
    other.owned_ = false;
  }
  return *this;
}

Communicator::~Communicator() {
  if (owned_ && comm_ != MPI_COMM_NULL && MpiRuntime::initialized()) MPI_Comm_free(&comm_);
}

Communicator Communicator::split_by_node() const {
  MPI_Comm out = MPI_COMM_NULL;
  HPCTRAIN_MPI(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &out));
  MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
  return Communicator(out, true);
}

void Communicator::reduce_sum(float* data, std::size_t count, int root) const {
  if (count > static_cast<std::size_t>(INT_MAX)) throw RuntimeFailure("reduce_sum: too many values for one call");
  const void* send = rank_ == root ? MPI_IN_PLACE : data;
  HPCTRAIN_MPI(MPI_Reduce(send, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, root, comm_));
}

Request Communicator::ireduce_sum(float* data, std::size_t count, int root) const {
  if (count > static_cast<std::size_t>(INT_MAX)) throw RuntimeFailure("ireduce_sum: too many values for one call");
  MPI_Request r = MPI_REQUEST_NULL;
  const void* send = rank_ == root ? MPI_IN_PLACE : data;
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Ireduce(send, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, root, comm_, &r));
  return Request(r);
}

namespace {
int chunk_count(std::size_t chunk, const char* what) {
  if (chunk > static_cast<std::size_t>(INT_MAX))
    throw RuntimeFailure(std::string(what) + ": shard too large for one call");
  return static_cast<int>(chunk);
}
}  // namespace

void Communicator::reduce_scatter_sum(const float* send, float* recv, std::size_t chunk) const {
  HPCTRAIN_MPI(
      MPI_Reduce_scatter_block(send, recv, chunk_count(chunk, "reduce_scatter_sum"), MPI_FLOAT, MPI_SUM, comm_));
}

Request Communicator::ireduce_scatter_sum(const float* send, float* recv, std::size_t chunk) const {
  MPI_Request r = MPI_REQUEST_NULL;
  const int n = chunk_count(chunk, "ireduce_scatter_sum");
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Ireduce_scatter_block(send, recv, n, MPI_FLOAT, MPI_SUM, comm_, &r));
  return Request(r);
}

void Communicator::allgather_in_place(float* data, std::size_t chunk) const {
  HPCTRAIN_MPI(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, chunk_count(chunk, "allgather_in_place"),
                             MPI_FLOAT, comm_));
}

Request Communicator::iallgather_in_place(float* data, std::size_t chunk) const {
  MPI_Request r = MPI_REQUEST_NULL;
  const int n = chunk_count(chunk, "iallgather_in_place");
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, n, MPI_FLOAT, comm_, &r));
  return Request(r);
}

void Communicator::gather(const float* send, float* recv, std::size_t chunk, int root) const {
  const int n = chunk_count(chunk, "gather");
  HPCTRAIN_MPI(MPI_Gather(send, n, MPI_FLOAT, rank_ == root ? recv : nullptr, n, MPI_FLOAT, root, comm_));
}

Request Communicator::ibroadcast(void* data, std::size_t bytes, int root) const {
  MPI_Request r = MPI_REQUEST_NULL;
  std::lock_guard<std::mutex> lock(nonblocking_mutex());
  HPCTRAIN_MPI(MPI_Ibcast(data, byte_count(bytes, "ibroadcast"), MPI_BYTE, root, comm_, &r));
  return Request(r);
}

Communicator Communicator::split(int color, int key) const {
  MPI_Comm out = MPI_COMM_NULL;
  HPCTRAIN_MPI(MPI_Comm_split(comm_, color, key, &out));
  MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
  return Communicator(out, true);
}

void Communicator::barrier() const {
  HPCTRAIN_MPI(MPI_Barrier(comm_));
}

void Communicator::allreduce_sum(float* data, std::size_t count) const {
  allreduce_chunked(comm_, data, count, MPI_FLOAT, MPI_SUM);
}
void Communicator::allreduce_sum(double* data, std::size_t count) const {
  allreduce_chunked(comm_, data, count, MPI_DOUBLE, MPI_SUM);
}
void Communicator::allreduce_sum(std::int64_t* data, std::size_t count) const {
  allreduce_chunked(comm_, data, count, MPI_INT64_T, MPI_SUM);
}
void Communicator::allreduce_max(double* data, std::size_t count) const {
  allreduce_chunked(comm_, data, count, MPI_DOUBLE, MPI_MAX);
}
void Communicator::allreduce_min(double* data, std::size_t count) const {
  allreduce_chunked(comm_, data, count, MPI_DOUBLE, MPI_MIN);
}

void Communicator::broadcast(void* data, std::size_t bytes, int root) const {
  auto* p = static_cast<char*>(data);
  for (std::size_t off = 0; off < bytes; off += kMaxCount) {
    const int n = static_cast<int>(std::min(kMaxCount, bytes - off));
    HPCTRAIN_MPI(MPI_Bcast(p + off, n, MPI_BYTE, root, comm_));
  }
}

void Communicator::broadcast(std::string& text, int root) const {
  std::uint64_t n = text.size();
  broadcast(&n, sizeof(n), root);
  text.resize(n);
  if (n > 0) broadcast(text.data(), n, root);
}

std::vector<double> Communicator::gather(const double* data, std::size_t count, int root) const {
  std::vector<double> out(rank_ == root ? count * size_ : 0);
  HPCTRAIN_MPI(MPI_Gather(data, static_cast<int>(count), MPI_DOUBLE, out.data(), static_cast<int>(count), MPI_DOUBLE,
                          root, comm_));
  return out;
}

std::vector<double> Communicator::gatherv(const std::vector<double>& data, int root) const {
  const int mine = static_cast<int>(data.size());
  std::vector<int> counts(rank_ == root ? size_ : 0), displs(rank_ == root ? size_ : 0);
  HPCTRAIN_MPI(MPI_Gather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, root, comm_));
  std::size_t total = 0;
  for (int r = 0; r < static_cast<int>(counts.size()); ++r) {
    displs[r] = static_cast<int>(total);
    total += static_cast<std::size_t>(counts[r]);
  }
  std::vector<double> out(total);
  HPCTRAIN_MPI(
      MPI_Gatherv(data.data(), mine, MPI_DOUBLE, out.data(), counts.data(), displs.data(), MPI_DOUBLE, root, comm_));
  return out;
}

std::vector<std::string> Communicator::gather_bytes(const std::string& mine, int root) const {
  const auto size = static_cast<std::int64_t>(mine.size());
  std::vector<std::int64_t> sizes(rank_ == root ? size_ : 0);
  HPCTRAIN_MPI(MPI_Gather(&size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, root, comm_));
  constexpr int kTag = 32001;  // only this exchange uses it on this communicator
  std::vector<std::string> out;
  if (rank_ != root) {
    for (std::size_t off = 0; off < mine.size(); off += kMaxCount) {
      const int n = static_cast<int>(std::min(kMaxCount, mine.size() - off));
      HPCTRAIN_MPI(MPI_Send(mine.data() + off, n, MPI_BYTE, root, kTag, comm_));
    }
    return out;
  }
  out.resize(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    if (r == root) {
      out[static_cast<std::size_t>(r)] = mine;
      continue;
    }
    std::string& buf = out[static_cast<std::size_t>(r)];
    buf.resize(static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)]));
    for (std::size_t off = 0; off < buf.size(); off += kMaxCount) {
      const int n = static_cast<int>(std::min(kMaxCount, buf.size() - off));
      HPCTRAIN_MPI(MPI_Recv(buf.data() + off, n, MPI_BYTE, r, kTag, comm_, MPI_STATUS_IGNORE));
    }
  }
  return out;
}

void Communicator::alltoallv(const void* send, const std::vector<std::int64_t>& send_counts, void* recv,
                             const std::vector<std::int64_t>& recv_counts) const {
  // MPI_Alltoallv takes int counts and displacements; every rank must pick the same path,
  // so the choice follows the largest total on any rank.
  std::int64_t total_send = 0, total_recv = 0;
  for (auto c : send_counts) total_send += c;
  for (auto c : recv_counts) total_recv += c;
  double largest = static_cast<double>(std::max(total_send, total_recv));
  allreduce_max(&largest, 1);
  if (largest < static_cast<double>(INT_MAX)) {
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      sc[r] = static_cast<int>(send_counts[r]);
      sd[r] = so;
      so += sc[r];
      rc[r] = static_cast<int>(recv_counts[r]);
      rd[r] = ro;
      ro += rc[r];
    }
    HPCTRAIN_MPI(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, comm_));
    return;
  }
  // Past 2 GiB: point-to-point in pieces of at most kMaxCount bytes. Sender and receiver
  // cut the same count into the same pieces, so every message has its match.
  std::vector<MPI_Request> requests;
  const auto* s = static_cast<const char*>(send);
  auto* d = static_cast<char*>(recv);
  std::int64_t so = 0, ro = 0;
  for (int r = 0; r < size_; ++r) {
    for (std::int64_t off = 0; off < recv_counts[r]; off += kMaxCount) {
      const int n = static_cast<int>(std::min<std::int64_t>(kMaxCount, recv_counts[r] - off));
      requests.emplace_back();
      HPCTRAIN_MPI(MPI_Irecv(d + ro + off, n, MPI_BYTE, r, 7, comm_, &requests.back()));
    }
    ro += recv_counts[r];
  }
  for (int r = 0; r < size_; ++r) {
    for (std::int64_t off = 0; off < send_counts[r]; off += kMaxCount) {
      const int n = static_cast<int>(std::min<std::int64_t>(kMaxCount, send_counts[r] - off));
      requests.emplace_back();
      HPCTRAIN_MPI(MPI_Isend(s + so + off, n, MPI_BYTE, r, 7, comm_, &requests.back()));
    }
    so += send_counts[r];
  }
  HPCTRAIN_MPI(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
}

void collective_check(const Communicator& comm, const std::function<void()>& step) {
  std::string message;
  int code = 0;
  int origin = -1;  // a check nested in `step` failed: the rank it named
  try {
    step();
  } catch (const CollectiveError& e) {
    message = e.what();
    code = e.exit_code();
    origin = e.origin_rank();
  } catch (const ConfigError& e) {
    message = e.what();
    code = 2;
  } catch (const DataError& e) {
    message = e.what();
    code = 3;
  } catch (const UsageError& e) {
    message = e.what();
    code = 2;
  } catch (const std::exception& e) {
    message = e.what();
    code = 1;
  }
  int failed_rank = message.empty() && code == 0 ? INT_MAX : comm.rank();
  int lowest = INT_MAX;
  HPCTRAIN_MPI(MPI_Allreduce(&failed_rank, &lowest, 1, MPI_INT, MPI_MIN, comm.raw()));
  if (lowest == INT_MAX) return;
  comm.broadcast(message, lowest);
  comm.broadcast(&code, sizeof(code), lowest);
  comm.broadcast(&origin, sizeof(origin), lowest);
  throw CollectiveError(message, origin >= 0 ? origin : lowest, code);
}

}  // namespace hpctrain
