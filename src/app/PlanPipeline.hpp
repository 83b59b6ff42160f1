#pragma once
// The pipeline part of `hpctrain plan` (parallel.pipeline_stages > 1): the stage split the
// trainer would make, each stage's parameters, gradients, optimizer state and the activations
// its schedule holds at once, beside the whole model's, and the predicted bubble.
#include <cstdint>

namespace hpctrain {

struct Config;
struct DatasetMeta;

// What one rank holding the whole model needs, for comparison (measured by PlanCommand).
struct WholeModelMemory {
  std::int64_t parameters = 0;
  double optimizer_states = 0;  // fp32 copies of the parameters the optimizer keeps
  double activations = 0;       // bytes, the per-replica batch in one pass
  double baseline = 0;          // bytes a rank holds before any model (in every budget verdict)
};

// Measures on this process's CPU (fp32) and prints. `ranks`: the launch's (or --ranks);
// `budget_gib` > 0 compares every stage's total with it. Throws ConfigError naming the key
// when the shape does not fit the ranks, the batch or the model.
void print_pipeline_plan(const Config& c, const DatasetMeta& meta, std::int64_t ranks, double budget_gib,
                         const WholeModelMemory& whole);

}  // namespace hpctrain
