#pragma once
// `hpctrain bench allreduce` and `hpctrain bench io`: micro-benchmarks that print each
// figure next to a baseline measured in the same run, with their formulas.
#include <string>
#include <vector>

namespace hpctrain {

int run_bench_command(const std::vector<std::string>& args);
// `hpctrain plan CONFIG`: per-rank memory (parameters, gradients, optimizer state,
// activations measured on probe steps, with and without checkpointing).
int cmd_plan(const std::vector<std::string>& args);

}  // namespace hpctrain
