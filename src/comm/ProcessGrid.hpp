#pragma once
// The 2-D process grid of a training run: its ranks (the world, or a cross-validation or
// search group) laid out as pipeline stages x data-parallel replicas, with one communicator
// per axis. Everything that needs the layout asks this object; nothing else computes a
// peer's rank.
//
//   replicas_inner (default): rank = stage * replicas + replica. The replicas of a stage
//     are consecutive ranks, so with ranks filled node by node they share a node and its
//     fast gradient reductions, and the stages span nodes, which pass only activations.
//   stages_inner: rank = replica * stages + stage. A replica's stages are consecutive.
//
// With one stage the grid is plain data parallelism: data() is the whole group.
#include <string>

#include "comm/Communicator.hpp"

namespace hpctrain {

enum class GridOrder { ReplicasInner, StagesInner };

// "replicas_inner" | "stages_inner"; throws ConfigError naming parallel.grid_order.
GridOrder parse_grid_order(const std::string& name);
const char* grid_order_name(GridOrder order);

// The layout alone, without communicators (plan, reports, tests).
struct GridLayout {
  int stages = 1;
  int replicas = 1;
  GridOrder order = GridOrder::ReplicasInner;

  // Throws ConfigError naming parallel.pipeline_stages (and `ranks_key`, the key that set
  // the rank count) when `stages` does not divide `ranks`.
  static GridLayout of(int ranks, int stages, GridOrder order, const std::string& ranks_key = "the ranks");
  int size() const { return stages * replicas; }
  int rank_of(int stage, int replica) const;
  int stage_of(int rank) const;
  int replica_of(int rank) const;
  std::string describe() const;  // "2 stages x 2 replicas (replicas_inner)"
};

class ProcessGrid {
 public:
  // Collective over `group`: splits it into the two axes' communicators. `group` must
  // outlive the grid.
  ProcessGrid(const Communicator& group, int stages, GridOrder order, const std::string& ranks_key = "the ranks");
  const GridLayout& layout() const { return layout_; }
  int stages() const { return layout_.stages; }
  int replicas() const { return layout_.replicas; }
  int stage() const { return stage_; }
  int replica() const { return replica_; }
  bool first_stage() const { return stage_ == 0; }
  bool last_stage() const { return stage_ == layout_.stages - 1; }
  const Communicator& group() const { return group_; }
  // This replica's stages; rank in it == stage.
  const Communicator& pipeline() const { return pipeline_; }
  // This stage's replicas; rank in it == replica. Gradients are reduced here.
  const Communicator& data() const { return data_; }

 private:
  const Communicator& group_;
  GridLayout layout_;
  int stage_ = 0;
  int replica_ = 0;
  Communicator pipeline_;
  Communicator data_;
};

}  // namespace hpctrain
