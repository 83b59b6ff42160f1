#pragma once
// Topology-aware sums (comm.hierarchical): reduce onto each node's first rank over shared
// memory, allreduce among those node leaders over the network (in flight: a RingSum for
// large buckets), broadcast back within each node. Between nodes every value crosses once per leader instead of once
// per rank, which pays when several ranks share a node and the network is the slower link.
//
// Summation order differs from a flat MPI_Allreduce (sums of floats then differ in the last
// bits, as with another bucket size); integer-valued sums are exact either way.
#include <cstddef>
#include <memory>
#include <string>

#include "comm/Communicator.hpp"

namespace hpctrain {

class RingSum;

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
    int phase_ = 0;                  // 0 reduce in the node, 1 allreduce among leaders, 2 broadcast, 3 done
    Request request_;                // the node's reduce or broadcast, or the leaders' small sum
    std::unique_ptr<RingSum> ring_;  // the leaders' large sum
  };
  Operation start(float* data, std::size_t count) const { return Operation(*this, data, count); }

 private:
  const Communicator& comm_;
  Communicator node_;     // this node's ranks; rank 0 leads
  Communicator leaders_;  // the node leaders (for the others: the other non-leaders, unused)
  int nodes_ = 1;
  int largest_node_ = 1;
};

// comm.hierarchical resolved for `comm`: "on", "off", or "auto" (on when it is worthwhile).
// Collective; returns null when off.
std::unique_ptr<HierarchicalSum> make_hierarchical_sum(const Communicator& comm, const std::string& mode);

}  // namespace hpctrain
