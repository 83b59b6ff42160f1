#pragma once
// Topology-aware sums (comm.hierarchical). Blocking, and in flight for small buckets or nodes
// of unequal rank counts: reduce onto each node's first rank over shared memory, allreduce
// among those node leaders over the network, broadcast back within each node. In flight for
// large buckets on equal nodes (the 2-D ring, as NCCL and Horovod build it): a ring
// reduce-scatter within the node, a ring allreduce of each rank's chunk among its peers (the
// ranks of the same local rank on the other nodes), a ring all-gather within the node; the
// node's data crosses the network once each way, split over its R ranks, and the node's own
// traffic is 2 (R-1)/R of the data instead of a reduce's and a broadcast's 2. Either way
// each value crosses between nodes once each way, where a flat ring over ranks placed by node
// crosses each link with 2 (P-1)/P of the data: it pays when several ranks share a node and
// the network is the slower link.
//
// Summation order differs from a flat MPI_Allreduce (sums of floats then differ in the last
// bits, as with another bucket size); integer-valued sums are exact either way.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

class RingSum;
class SumInFlight;

class HierarchicalSum {
 public:
  // Collective over `comm`: groups its ranks by node (shared memory), or by `node_color`
  // when given (>= 0 on every rank: tests and benchmarks that pretend to have nodes).
  explicit HierarchicalSum(const Communicator& comm, int node_color = -1);

  int nodes() const { return nodes_; }
  // More than one node and more ranks than nodes: the only case where it can pay.
  bool worthwhile() const { return nodes_ > 1 && comm_.size() > nodes_; }
  std::string describe() const;  // "2 nodes, 2 ranks on the largest"

  // Blocking sum in place over every rank of `comm`.
  void sum(float* data, std::size_t count) const;

  // A sum in flight: three non-blocking steps, each started when the one before completes.
  // Every rank of `comm` must start the same sums in the same order.
  class Operation {
   public:
    Operation(const HierarchicalSum& owner, float* data, std::size_t count);
    Operation(Operation&&) noexcept;
    ~Operation();
    bool test();  // drives progress; true once every step is done

   private:
    const HierarchicalSum& owner_;
    float* data_;
    std::size_t count_;
    void start_phase();
    bool rings_;                            // the 2-D ring (a large bucket, equal nodes) or the leaders' path
    int phase_ = 0;                         // 0 within the node, 1 among nodes, 2 back within the node, 3 done
    Request request_;                       // the leaders' path: the node's reduce or broadcast
    std::unique_ptr<SumInFlight> leaders_;  // the leaders' path: the sum among the leaders
    std::unique_ptr<RingSum> ring_;         // a phase of the 2-D ring
  };
  Operation start(float* data, std::size_t count) const { return Operation(*this, data, count); }

 private:
  const Communicator& comm_;
  Communicator node_;                   // this node's ranks; rank 0 leads
  Communicator peers_;                  // the ranks of this local rank, one per node (for rank 0: the leaders)
  mutable std::vector<float> scratch_;  // the RingSums' buffer (one sum in flight)
  int nodes_ = 1;
  int largest_node_ = 1;
  bool equal_nodes_ = true;  // every node holds the same number of ranks
};

// comm.hierarchical resolved for `comm`: "on", "off", or "auto" (on when it is worthwhile).
// Collective; returns null when off.
std::unique_ptr<HierarchicalSum> make_hierarchical_sum(const Communicator& comm, const std::string& mode);

}  // namespace hpctrain
