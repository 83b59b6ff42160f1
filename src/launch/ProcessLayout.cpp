#include "launch/ProcessLayout.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "launch/Mpi.hpp"

namespace hpctrain {
namespace {

constexpr int kMaskWords = 16;  // 1024 CPUs

std::vector<unsigned long> affinity_words() {
  std::vector<unsigned long> words(kMaskWords, 0);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long c = 0; c < n && c < kMaskWords * 64; ++c) words[c / 64] |= 1UL << (c % 64);
    return words;
  }
  for (int c = 0; c < CPU_SETSIZE && c < kMaskWords * 64; ++c) {
    if (CPU_ISSET(c, &set)) words[c / 64] |= 1UL << (c % 64);
  }
  return words;
}

}  // namespace

ProcessLayout ProcessLayout::discover(MPI_Comm world) {
  ProcessLayout p;
  HPCTRAIN_MPI(MPI_Comm_rank(world, &p.world_rank));
  HPCTRAIN_MPI(MPI_Comm_size(world, &p.world_size));
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  p.hostname = host;

  MPI_Comm node = MPI_COMM_NULL;
  HPCTRAIN_MPI(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, p.world_rank, MPI_INFO_NULL, &node));
  HPCTRAIN_MPI(MPI_Comm_rank(node, &p.local_rank));
  HPCTRAIN_MPI(MPI_Comm_size(node, &p.local_size));

  // Node index: number of distinct node leaders with a lower world rank.
  int leader = p.local_rank == 0 ? 1 : 0;
  int leaders_before = 0;
  HPCTRAIN_MPI(MPI_Exscan(&leader, &leaders_before, 1, MPI_INT, MPI_SUM, world));
  if (p.world_rank == 0) leaders_before = 0;
  int my_node = leaders_before;
  HPCTRAIN_MPI(MPI_Bcast(&my_node, 1, MPI_INT, 0, node));
  p.node_index = my_node;
  HPCTRAIN_MPI(MPI_Allreduce(&leader, &p.node_count, 1, MPI_INT, MPI_SUM, world));

  const auto mine = affinity_words();
  std::vector<unsigned long> all(static_cast<std::size_t>(kMaskWords) * p.local_size);
  HPCTRAIN_MPI(
      MPI_Allgather(mine.data(), kMaskWords, MPI_UNSIGNED_LONG, all.data(), kMaskWords, MPI_UNSIGNED_LONG, node));
  MPI_Comm_free(&node);
  p.cpus_in_mask = 0;
  for (auto w : mine) p.cpus_in_mask += __builtin_popcountl(w);
  p.ranks_sharing_cpus = 0;
  for (int r = 0; r < p.local_size; ++r) {
    bool overlap = false;
    for (int w = 0; w < kMaskWords; ++w) overlap = overlap || (all[r * kMaskWords + w] & mine[w]) != 0;
    if (overlap) ++p.ranks_sharing_cpus;
  }
  p.cpus_in_mask = std::max(1, p.cpus_in_mask);
  p.ranks_sharing_cpus = std::max(1, p.ranks_sharing_cpus);
  return p;
}

int ProcessLayout::default_threads() const {
  return std::max(1, cpus_in_mask / ranks_sharing_cpus);
}

}  // namespace hpctrain
