#include "launch/LaunchEnvironment.hpp"

#include <cstdlib>

namespace hpctrain {

LaunchEnvironment LaunchEnvironment::detect() {
  static const char* names[] = {"SLURM_JOB_ID",
                                "SLURM_ARRAY_JOB_ID",
                                "SLURM_ARRAY_TASK_ID",
                                "SLURM_PROCID",
                                "SLURM_LOCALID",
                                "SLURM_NTASKS",
                                "SLURM_JOB_NODELIST",
                                "SLURM_JOB_NUM_NODES",
                                "SLURM_CPUS_PER_TASK",
                                "SLURM_GPUS_PER_TASK",
                                "SLURM_STEP_ID",
                                "OMPI_COMM_WORLD_SIZE",
                                "OMPI_COMM_WORLD_RANK",
                                "OMPI_COMM_WORLD_LOCAL_RANK",
                                "OMPI_COMM_WORLD_LOCAL_SIZE",
                                "CUDA_VISIBLE_DEVICES",
                                "OMP_NUM_THREADS"};
  LaunchEnvironment env;
  for (const char* n : names) {
    if (const char* v = std::getenv(n)) env.variables[n] = v;
  }
  if (env.variables.count("SLURM_JOB_ID")) {
    env.launcher = "slurm";
  } else if (env.variables.count("OMPI_COMM_WORLD_SIZE")) {
    env.launcher = "mpirun";
  } else {
    env.launcher = "singleton";
  }
  return env;
}

std::string LaunchEnvironment::slurm_job_tag() const {
  auto it = variables.find("SLURM_JOB_ID");
  if (it == variables.end()) return "";
  auto array_job = variables.find("SLURM_ARRAY_JOB_ID");
  auto task = variables.find("SLURM_ARRAY_TASK_ID");
  if (array_job != variables.end() && task != variables.end()) return "slurm-" + array_job->second + "_" + task->second;
  return "slurm-" + it->second;
}

}  // namespace hpctrain
