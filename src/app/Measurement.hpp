#pragma once
// What `hpctrain bench` and `hpctrain plan` measure with: medians, operations timed in
// alternation across ranks, and the JSON record of a benchmark.
#include <boost/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

double median(std::vector<double> values);

// Time per call of each of `ops`, measured in alternation (a, b, a, b, ...) so that noise
// on a shared machine touches both alike: median over repeats of (time of `iters` calls /
// iters), each repeat's time the slowest rank's. Collective over `comm`. With `gap_seconds`
// > 0 every call follows that long a busy wait and a barrier, not timed (the compute between
// a training step's reductions: a network that refills credit while idle, like a token
// bucket, shows here what training sees).
std::vector<double> time_per_op(const Communicator& comm, int repeats, int iters,
                                const std::vector<std::function<void()>>& ops, double gap_seconds = 0);

// As in training: LibTorch's intra-op threads from the affinity mask, so idle OpenMP workers
// do not spin on the cores the communication thread needs. Collective over MPI's world.
void use_default_threads();

// Writes `value` as pretty JSON to `path`; nothing when `path` is empty.
void write_json_file(const std::string& path, const boost::json::value& value);

}  // namespace hpctrain
