#pragma once
// A group of ranks and the collectives hpctrain uses on it. Sub-communicators
// (cross-validation groups, pipeline stages) come from split(). Owns its MPI_Comm
// unless it wraps MPI_COMM_WORLD.
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hpctrain {

// An outstanding non-blocking operation. Completing it is the owner's job (test/wait);
// the destructor waits for one still active, so no buffer is freed under MPI.
class Request {
 public:
  Request() = default;
  explicit Request(MPI_Request r) : request_(r) {}
  Request(Request&& o) noexcept : request_(o.request_) { o.request_ = MPI_REQUEST_NULL; }
  Request& operator=(Request&& o) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();
  bool test();  // true once complete (drives MPI's progress)
  void wait();

 private:
  MPI_Request request_ = MPI_REQUEST_NULL;
};

class Communicator {
 public:
  static Communicator world();
  Communicator(Communicator&& other) noexcept;
  Communicator& operator=(Communicator&& other) noexcept;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  ~Communicator();

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm raw() const { return comm_; }

  // Ranks with the same color form one new communicator, ordered by key.
  Communicator split(int color, int key) const;
  // The ranks that share this rank's node (MPI_COMM_TYPE_SHARED), in rank order.
  Communicator split_by_node() const;

  void barrier() const;
  void allreduce_sum(float* data, std::size_t count) const;
  // Non-blocking sum in place; count must fit an int (buckets do).
  Request iallreduce_sum(float* data, std::size_t count) const;
  // Sum onto `root` in place (its `data` receives the sum; others' is left as it was), and
  // root's bytes to every rank: blocking and non-blocking. Counts must fit an int.
  void reduce_sum(float* data, std::size_t count, int root) const;
  Request ireduce_sum(float* data, std::size_t count, int root) const;
  Request ibroadcast(void* data, std::size_t bytes, int root) const;
  // Sharded data parallelism (parallel.shard). `send` holds size() * chunk values; rank r
  // receives the sum over ranks of send[r * chunk, (r + 1) * chunk) in `recv` (chunk values).
  void reduce_scatter_sum(const float* send, float* recv, std::size_t chunk) const;
  Request ireduce_scatter_sum(const float* send, float* recv, std::size_t chunk) const;
  // `data` holds size() * chunk values; rank r's chunk r goes to every rank, in place.
  void allgather_in_place(float* data, std::size_t chunk) const;
  Request iallgather_in_place(float* data, std::size_t chunk) const;
  // Every rank's `chunk` values, concatenated by rank, into `recv` on `root` (size() * chunk
  // values there; ignored elsewhere).
  void gather(const float* send, float* recv, std::size_t chunk, int root) const;
  // Non-blocking point-to-point bytes (pipeline activations and their gradients). Messages
  // between two ranks with one tag arrive in the order they were sent. The buffer must live
  // until the request completes.
  Request isend(const void* data, std::size_t bytes, int dest, int tag) const;
  Request irecv(void* data, std::size_t bytes, int source, int tag) const;
  void allreduce_sum(double* data, std::size_t count) const;
  void allreduce_sum(std::int64_t* data, std::size_t count) const;
  void allreduce_max(double* data, std::size_t count) const;
  void allreduce_min(double* data, std::size_t count) const;
  void broadcast(void* data, std::size_t bytes, int root) const;
  void broadcast(std::string& text, int root) const;
  // Every rank's `count` doubles, concatenated by rank, on `root` (empty elsewhere).
  std::vector<double> gather(const double* data, std::size_t count, int root) const;
  // Every rank's values (any count), concatenated by rank, on `root` (empty elsewhere).
  std::vector<double> gatherv(const std::vector<double>& data, int root) const;
  // Every rank's bytes on `root`, one entry per rank (`mine` itself at root's index; empty
  // elsewhere). Any size: large payloads go in 1 GiB pieces, one source at a time, so root
  // holds the results and one piece in flight.
  std::vector<std::string> gather_bytes(const std::string& mine, int root) const;
  // Byte exchange: send_counts[r] bytes to rank r from send (packed by rank order);
  // recv_counts must be known by the caller.
  void alltoallv(const void* send, const std::vector<std::int64_t>& send_counts, void* recv,
                 const std::vector<std::int64_t>& recv_counts) const;

 private:
  Communicator(MPI_Comm comm, bool owned);
  MPI_Comm comm_ = MPI_COMM_NULL;
  bool owned_ = false;
  int rank_ = 0;
  int size_ = 1;
};

// Raised on every rank when a collective check failed on some rank. The message is the
// failing rank's; `origin_rank` is the lowest rank that failed.
class CollectiveError : public std::exception {
 public:
  CollectiveError(std::string message, int origin_rank, int exit_code)
      : message_(std::move(message)), origin_rank_(origin_rank), exit_code_(exit_code) {}
  const char* what() const noexcept override { return message_.c_str(); }
  int origin_rank() const { return origin_rank_; }
  int exit_code() const { return exit_code_; }

 private:
  std::string message_;
  int origin_rank_;
  int exit_code_;
};

// Runs `step` on every rank of `comm`, then agrees: if any rank threw, every rank throws a
// CollectiveError carrying the lowest failing rank's message. Use it around steps that
// may fail on some ranks only (opening files, reading shards), so no rank is left
// waiting in a later collective and the user sees one message.
void collective_check(const Communicator& comm, const std::function<void()>& step);

}  // namespace hpctrain
