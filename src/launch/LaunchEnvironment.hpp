#pragma once
// What the launcher (mpirun, srun, sbatch) told this process through the environment.
// Rank, world size and local rank always come from MPI (ProcessLayout); these variables are
// the launcher's own view, recorded in report.json and used for defaults (run directory,
// threads per rank).
#include <map>
#include <string>

namespace hpctrain {

struct LaunchEnvironment {
  std::string launcher;                          // "slurm", "mpirun" or "singleton"
  std::map<std::string, std::string> variables;  // the recorded launcher variables that are set

  static LaunchEnvironment detect();
  // "slurm-JOB" or, in a job array, "slurm-ARRAYJOB_TASK"; "" outside Slurm.
  std::string slurm_job_tag() const;
  // The run directory when the config leaves run.dir empty: runs/<slurm_job_tag()> in a
  // Slurm job, else runs/<config file name without .json>.
  std::string default_run_dir(const std::string& config_path) const;
  // CPUs Slurm gave each task (SLURM_CPUS_PER_TASK), 0 when not set or not a number.
  int slurm_cpus_per_task() const;
  // The launcher's rank and local rank (SLURM_PROCID / OMPI_COMM_WORLD_RANK, SLURM_LOCALID /
  // OMPI_COMM_WORLD_LOCAL_RANK), -1 when the launcher did not say.
  int launcher_rank() const;
  int launcher_local_rank() const;
  // Non-empty when srun started several tasks that MPI did not join into one world (srun
  // without the PMIx plugin): every task would train alone on the same run directory.
  std::string world_size_mismatch(int mpi_world_size) const;
  // The same, told before MPI starts: srun started several tasks and gave them no PMI/PMIx
  // (MPI_Init would fail with the MPI library's own error). Empty when all is well.
  std::string srun_without_mpi_plugin() const;
};

// Threads per rank and where the number came from ("run.threads", "SLURM_CPUS_PER_TASK" or
// "affinity"). configured: run.threads (0 = choose); mask_cpus / sharing: the CPUs in the
// rank's affinity mask and the local ranks overlapping it.
struct ThreadChoice {
  int threads = 1;
  std::string source;
};
ThreadChoice choose_threads(long long configured, const LaunchEnvironment& env, int mask_cpus, int sharing);

}  // namespace hpctrain
