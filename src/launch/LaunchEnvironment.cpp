#include "launch/LaunchEnvironment.hpp"

#include <algorithm>
#include <cstdlib>

namespace hpctrain {
namespace {

int parse_int(const std::map<std::string, std::string>& vars, const char* name, int fallback) {
  auto it = vars.find(name);
  if (it == vars.end() || it->second.empty()) return fallback;
  char* end = nullptr;
  const long v = std::strtol(it->second.c_str(), &end, 10);
  if (*end != '\0' || v < 0 || v > 1 << 20) return fallback;
  return static_cast<int>(v);
}

}  // namespace

LaunchEnvironment LaunchEnvironment::detect() {
  static const char* names[] = {
      // Slurm: the job, the step, this task, the allocation
      "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
      "SLURM_RESTART_COUNT", "SLURM_CLUSTER_NAME", "SLURM_JOB_PARTITION", "SLURM_SUBMIT_DIR", "SLURM_STEP_ID",
      "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
      "SLURM_TASKS_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE",
      "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_GPUS_PER_TASK", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_ON_NODE",
      "SLURM_JOB_GPUS", "SLURM_CPU_BIND", "SLURM_MPI_TYPE",
      // Open MPI's mpirun and PMIx
      "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
      "OMPI_COMM_WORLD_NODE_RANK", "PMIX_RANK", "PMI_RANK", "PMI_FD",
      // devices and threads
      "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"};
  LaunchEnvironment env;
  for (const char* n : names) {
    if (const char* v = std::getenv(n)) env.variables[n] = v;
  }
  if (env.variables.count("SLURM_JOB_ID")) {
    env.launcher = env.variables.count("OMPI_COMM_WORLD_SIZE") ? "slurm+mpirun"
                   : env.variables.count("SLURM_STEP_ID")      ? "slurm+srun"
                                                               : "slurm";
  } else if (env.variables.count("OMPI_COMM_WORLD_SIZE")) {
    env.launcher = "mpirun";
  } else {
    env.launcher = "singleton";
  }
  return env;
}

std::string LaunchEnvironment::slurm_job_tag() const {
  auto it = variables.find("SLURM_JOB_ID");
  if (it == variables.end() || it->second.empty()) return "";
  auto array_job = variables.find("SLURM_ARRAY_JOB_ID");
  auto task = variables.find("SLURM_ARRAY_TASK_ID");
  if (array_job != variables.end() && task != variables.end()) return "slurm-" + array_job->second + "_" + task->second;
  return "slurm-" + it->second;
}

std::string LaunchEnvironment::default_run_dir(const std::string& config_path) const {
  const std::string tag = slurm_job_tag();
  if (!tag.empty()) return "runs/" + tag;
  std::string stem = config_path.substr(config_path.find_last_of('/') + 1);
  if (stem.size() >= 5 && stem.compare(stem.size() - 5, 5, ".json") == 0) stem.resize(stem.size() - 5);
  return "runs/" + (stem.empty() ? std::string("default") : stem);
}

int LaunchEnvironment::slurm_cpus_per_task() const {
  return parse_int(variables, "SLURM_CPUS_PER_TASK", 0);
}

int LaunchEnvironment::launcher_rank() const {
  const int slurm = parse_int(variables, "SLURM_PROCID", -1);
  // mpirun inside an sbatch job: the batch step's SLURM_PROCID (0 on every rank) is stale.
  const int ompi = parse_int(variables, "OMPI_COMM_WORLD_RANK", -1);
  return ompi >= 0 ? ompi : slurm;
}

int LaunchEnvironment::launcher_local_rank() const {
  const int slurm = parse_int(variables, "SLURM_LOCALID", -1);
  const int ompi = parse_int(variables, "OMPI_COMM_WORLD_LOCAL_RANK", -1);
  return ompi >= 0 ? ompi : slurm;
}

namespace {
std::string srun_hint(int step_tasks) {
  return "srun started " + std::to_string(step_tasks) +
         " tasks without an MPI plugin to join them into one job, so each would train alone: launch with "
         "`srun --mpi=pmix` (or your site's MPI plugin, see `srun --mpi=list`), or with mpirun inside the "
         "allocation (an MPI built on Slurm's PMI-1 library: set HPCTRAIN_ALLOW_PLAIN_SRUN=1)";
}
}  // namespace

std::string LaunchEnvironment::srun_without_mpi_plugin() const {
  // An MPI that reads Slurm's PMI-1 library by itself sets none of the variables below.
  if (const char* allow = std::getenv("HPCTRAIN_ALLOW_PLAIN_SRUN"); allow && std::string(allow) == "1") return "";
  const int step_tasks = parse_int(variables, "SLURM_STEP_NUM_TASKS", 0);
  if (step_tasks <= 1 || !variables.count("SLURM_STEP_ID")) return "";
  for (const char* joined : {"PMIX_RANK", "PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_SIZE"}) {
    if (variables.count(joined)) return "";
  }
  return srun_hint(step_tasks);
}

std::string LaunchEnvironment::world_size_mismatch(int mpi_world_size) const {
  const int step_tasks = parse_int(variables, "SLURM_STEP_NUM_TASKS", 0);
  if (mpi_world_size != 1 || step_tasks <= 1 || variables.count("OMPI_COMM_WORLD_SIZE")) return "";
  return srun_hint(step_tasks);
}

ThreadChoice choose_threads(long long configured, const LaunchEnvironment& env, int mask_cpus, int sharing) {
  mask_cpus = std::max(1, mask_cpus);
  if (configured > 0) return {static_cast<int>(configured), "run.threads"};
  // Slurm's CPUs per task is what the site allocated; a rank never uses more CPUs than its
  // affinity mask holds, whichever is smaller wins.
  if (const int slurm = env.slurm_cpus_per_task(); slurm > 0) {
    return {std::min(slurm, mask_cpus), "SLURM_CPUS_PER_TASK"};
  }
  return {std::max(1, mask_cpus / std::max(1, sharing)), "affinity"};
}

}  // namespace hpctrain
