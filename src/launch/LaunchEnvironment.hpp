#pragma once
// What the launcher (mpirun, srun, sbatch) told this process through the environment.
#include <map>
#include <string>

namespace hpctrain {

struct LaunchEnvironment {
  std::string launcher;                          // "slurm", "mpirun" or "singleton"
  std::map<std::string, std::string> variables;  // the recorded launcher variables that are set

  static LaunchEnvironment detect();
  // Suggested run directory suffix from the Slurm job (and array task), "" outside Slurm.
  std::string slurm_job_tag() const;
};

}  // namespace hpctrain
