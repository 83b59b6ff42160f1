#pragma once
// The one object that knows where this process sits: rank, node, local rank, threads.
#include <mpi.h>

#include <string>

namespace hpctrain {

struct ProcessLayout {
  int world_rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes sharing this node's memory
  int local_size = 1;
  int node_index = 0;  // index of this node among the job's nodes
  int node_count = 1;
  int cpus_in_mask = 1;        // CPUs in this process's affinity mask
  int ranks_sharing_cpus = 1;  // local ranks whose affinity mask overlaps this one's
  std::string hostname;

  // Collective over `world`.
  static ProcessLayout discover(MPI_Comm world);

  // Intra-op threads this rank should use: its CPUs shared among the local ranks that may
  // run on them.
  int default_threads() const;
};

}  // namespace hpctrain
