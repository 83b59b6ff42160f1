#include "comm/HierarchicalSum.hpp"

#include "comm/RingSum.hpp"

#include "util/Error.hpp"

namespace hpctrain {

HierarchicalSum::HierarchicalSum(const Communicator& comm, int node_color)
    : comm_(comm),
      node_(node_color >= 0 ? comm.split(node_color, comm.rank()) : comm.split_by_node()),
      peers_(comm.split(node_.rank(), comm.rank())) {
  double leaders = node_.rank() == 0 ? 1.0 : 0.0;
  double sizes[2] = {static_cast<double>(node_.size()), -static_cast<double>(node_.size())};
  comm_.allreduce_sum(&leaders, 1);
  comm_.allreduce_max(sizes, 2);
  nodes_ = static_cast<int>(leaders);
  largest_node_ = static_cast<int>(sizes[0]);
  equal_nodes_ = sizes[0] == -sizes[1];
}

std::string HierarchicalSum::describe() const {
  return std::to_string(nodes_) + (nodes_ == 1 ? " node, " : " nodes, ") + std::to_string(largest_node_) +
         " ranks on the largest";
}

void HierarchicalSum::sum(float* data, std::size_t count) const {
  node_.reduce_sum(data, count, 0);
  if (node_.rank() == 0) peers_.allreduce_sum(data, count);
  node_.broadcast(data, count * sizeof(float), 0);
}

HierarchicalSum::Operation::Operation(const HierarchicalSum& owner, float* data, std::size_t count)
    : owner_(owner),
      data_(data),
      count_(count),
      rings_(owner.equal_nodes_ && owner.node_.size() > 1 &&
             ring_pays_for(static_cast<std::int64_t>(count * sizeof(float)), owner.comm_.size())) {
  start_phase();
}

HierarchicalSum::Operation::Operation(Operation&&) noexcept = default;
HierarchicalSum::Operation::~Operation() = default;

void HierarchicalSum::Operation::start_phase() {
  const Communicator &node = owner_.node_, &peers = owner_.peers_;
  auto& scratch = owner_.scratch_;
  if (rings_) {
    if (phase_ == 0) ring_ = std::make_unique<RingSum>(node, data_, count_, scratch, RingPart::ReduceScatter);
    if (phase_ == 1) {
      const RingSum::Span mine = RingSum::owned_chunk(count_, node.rank(), node.size());
      ring_ = std::make_unique<RingSum>(peers, data_ + mine.first, mine.count, scratch);
    }
    if (phase_ == 2) ring_ = std::make_unique<RingSum>(node, data_, count_, scratch, RingPart::AllGather);
    return;
  }
  if (phase_ == 0) request_ = node.ireduce_sum(data_, count_, 0);
  if (phase_ == 1 && node.rank() == 0) leaders_ = std::make_unique<SumInFlight>(peers, data_, count_, scratch);
  if (phase_ == 2) request_ = node.ibroadcast(data_, count_ * sizeof(float), 0);
}

bool HierarchicalSum::Operation::test() {
  while (phase_ < 3) {
    if (!request_.test() || (ring_ && !ring_->test()) || (leaders_ && !leaders_->test())) return false;
    ring_.reset();
    leaders_.reset();
    if (++phase_ < 3) start_phase();
  }
  return true;
}

std::unique_ptr<HierarchicalSum> make_hierarchical_sum(const Communicator& comm, const std::string& mode) {
  if (mode != "auto" && mode != "on" && mode != "off") throw ConfigError("comm.hierarchical: unknown mode " + mode);
  if (mode == "off" || comm.size() == 1) return nullptr;
  auto sum = std::make_unique<HierarchicalSum>(comm);
  if (mode == "auto" && !sum->worthwhile()) return nullptr;
  return sum;
}

}  // namespace hpctrain
