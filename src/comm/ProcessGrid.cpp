#include "comm/ProcessGrid.hpp"

#include "util/Error.hpp"

namespace hpctrain {

GridOrder parse_grid_order(const std::string& name) {
  if (name == "replicas_inner") return GridOrder::ReplicasInner;
  if (name == "stages_inner") return GridOrder::StagesInner;
  throw ConfigError("parallel.grid_order: \"" + name + "\" is not replicas_inner or stages_inner");
}

const char* grid_order_name(GridOrder order) {
  return order == GridOrder::ReplicasInner ? "replicas_inner" : "stages_inner";
}

GridLayout GridLayout::of(int ranks, int stages, GridOrder order, const std::string& ranks_key) {
  if (stages < 1 || ranks % stages != 0) {
    throw ConfigError("parallel.pipeline_stages: " + std::to_string(stages) + " stages do not divide " + ranks_key +
                      " (" + std::to_string(ranks) +
                      "); the ranks form a grid of stages x data-parallel replicas, so use a divisor of " +
                      std::to_string(ranks));
  }
  return GridLayout{stages, ranks / stages, order};
}

int GridLayout::rank_of(int stage, int replica) const {
  return order == GridOrder::ReplicasInner ? stage * replicas + replica : replica * stages + stage;
}

int GridLayout::stage_of(int rank) const {
  return order == GridOrder::ReplicasInner ? rank / replicas : rank % stages;
}

int GridLayout::replica_of(int rank) const {
  return order == GridOrder::ReplicasInner ? rank % replicas : rank / stages;
}

std::string GridLayout::describe() const {
  return std::to_string(stages) + (stages == 1 ? " stage x " : " stages x ") + std::to_string(replicas) +
         (replicas == 1 ? " replica (" : " replicas (") + grid_order_name(order) + ")";
}

ProcessGrid::ProcessGrid(const Communicator& group, int stages, GridOrder order, const std::string& ranks_key)
    : group_(group),
      layout_(GridLayout::of(group.size(), stages, order, ranks_key)),
      stage_(layout_.stage_of(group.rank())),
      replica_(layout_.replica_of(group.rank())),
      // One split per axis, ranked by the position along it.
      pipeline_(group.split(replica_, stage_)),
      data_(group.split(stage_, replica_)) {}

}  // namespace hpctrain
