#include "comm/HierarchicalSum.hpp"

#include "comm/RingSum.hpp"

#include "util/Error.hpp"

namespace hpctrain {

HierarchicalSum::HierarchicalSum(const Communicator& comm, int node_color)
    : comm_(comm),
      node_(node_color >= 0 ? comm.split(node_color, comm.rank()) : comm.split_by_node()),
      leaders_(comm.split(node_.rank() == 0 ? 0 : 1, comm.rank())) {
  double leaders = node_.rank() == 0 ? 1.0 : 0.0;
  double largest = static_cast<double>(node_.size());
  comm_.allreduce_sum(&leaders, 1);
  comm_.allreduce_max(&largest, 1);
  nodes_ = static_cast<int>(leaders);
  largest_node_ = static_cast<int>(largest);
}

std::string HierarchicalSum::describe() const {
  return std::to_string(nodes_) + (nodes_ == 1 ? " node, " : " nodes, ") + std::to_string(largest_node_) +
         " ranks on the largest";
}

void HierarchicalSum::sum(float* data, std::size_t count) const {
  node_.reduce_sum(data, count, 0);
  if (node_.rank() == 0) leaders_.allreduce_sum(data, count);
  node_.broadcast(data, count * sizeof(float), 0);
}

HierarchicalSum::Operation::Operation(const HierarchicalSum& owner, float* data, std::size_t count)
    : owner_(owner), data_(data), count_(count), request_(owner.node_.ireduce_sum(data, count, 0)) {}

HierarchicalSum::Operation::Operation(Operation&&) noexcept = default;
HierarchicalSum::Operation::~Operation() = default;

bool HierarchicalSum::Operation::test() {
  while (phase_ < 3) {
    if (!request_.test() || (ring_ && !ring_->test())) return false;
    ring_.reset();
    ++phase_;
    if (phase_ == 1 && owner_.node_.rank() == 0) {
      const Communicator& leaders = owner_.leaders_;
      if (ring_pays_for(static_cast<std::int64_t>(count_ * sizeof(float)), leaders.size())) {
        ring_ = std::make_unique<RingSum>(leaders, data_, count_);
      } else {
        request_ = leaders.iallreduce_sum(data_, count_);
      }
    } else if (phase_ == 2) {
      request_ = owner_.node_.ibroadcast(data_, count_ * sizeof(float), 0);
    }
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
