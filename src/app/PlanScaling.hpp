#pragma once
// `hpctrain plan --nodes ...`: a performance model of data-parallel training across nodes
// (docs/cluster.md, "Predicting scaling"). From measured step profiles (runs' report.json:
// data, forward, backward and optimizer time per step, global batch, parameters, buckets; one
// per ranks-per-node count, because ranks that share a node's cores and memory bandwidth each
// compute more slowly than one rank alone) and an alpha-beta model of the links (latency
// alpha, bandwidth beta within a node and between nodes, given or fitted from `hpctrain bench
// allreduce --json` on the target at the sizes of the run's gradient buckets), it predicts per
// node count the step time, the exposed communication, samples/s, and the strong or weak
// scaling efficiency.
#include <string>
#include <vector>

namespace hpctrain {

struct ScalingArguments {
  std::vector<std::string> profiles;  // report.json of measured runs (the one whose ranks per node match is used)
  std::vector<int> nodes;             // node counts to predict
  int ranks_per_node = 1;
  bool weak = false;                            // weak scaling: the per-rank batch of the profile on every count
  std::string hierarchical = "off";             // the reduction modelled: off (flat ring) or on
  double link_gbps = 10, link_latency_us = 20;  // between nodes
  double node_gbps = 80, node_latency_us = 2;   // within a node (shared memory)
  std::string inter_json, intra_json;           // bench allreduce --json files: fit instead
  double bucket_mb = 0;                         // 0: the profile's comm.bucket_mb
  std::string json_path;
};

// Prints the table; writes json_path when set. Throws UsageError/DataError naming the file.
void print_scaling_plan(const ScalingArguments& a);

}  // namespace hpctrain
