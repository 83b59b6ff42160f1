// The launcher's view: run directory defaults, threads per rank, and the srun checks.
#include <gtest/gtest.h>

#include "launch/LaunchEnvironment.hpp"

namespace hpctrain {
namespace {

LaunchEnvironment env_of(std::map<std::string, std::string> vars) {
  LaunchEnvironment env;
  env.variables = std::move(vars);
  return env;
}

TEST(LaunchEnvironment, RunDirectoryIsNamedAfterTheSlurmJobOrTheConfig) {
  EXPECT_EQ(env_of({}).default_run_dir("configs/fashion_mnist_cnn.json"), "runs/fashion_mnist_cnn");
  EXPECT_EQ(env_of({}).default_run_dir("plain"), "runs/plain");
  EXPECT_EQ(env_of({}).default_run_dir("/x/.json"), "runs/default");
  EXPECT_EQ(env_of({{"SLURM_JOB_ID", "123"}}).default_run_dir("configs/a.json"), "runs/slurm-123");
  // A job array task: the array's id and the task index (SLURM_JOB_ID differs per task).
  EXPECT_EQ(env_of({{"SLURM_JOB_ID", "130"}, {"SLURM_ARRAY_JOB_ID", "128"}, {"SLURM_ARRAY_TASK_ID", "2"}})
                .default_run_dir("configs/a.json"),
            "runs/slurm-128_2");
}

TEST(LaunchEnvironment, ThreadsFollowSlurmCpusPerTaskWithinTheAffinityMask) {
  const auto plain = env_of({});
  const auto slurm4 = env_of({{"SLURM_CPUS_PER_TASK", "4"}});
  EXPECT_EQ(choose_threads(3, slurm4, 8, 1).threads, 3);  // run.threads wins
  EXPECT_EQ(choose_threads(3, slurm4, 8, 1).source, "run.threads");
  EXPECT_EQ(choose_threads(0, slurm4, 16, 4).threads, 4);  // unbound ranks: Slurm's share
  EXPECT_EQ(choose_threads(0, slurm4, 16, 4).source, "SLURM_CPUS_PER_TASK");
  EXPECT_EQ(choose_threads(0, slurm4, 2, 1).threads, 2);  // never more than the mask
  EXPECT_EQ(choose_threads(0, plain, 16, 4).threads, 4);  // the mask shared by the ranks on it
  EXPECT_EQ(choose_threads(0, plain, 16, 4).source, "affinity");
  EXPECT_EQ(choose_threads(0, plain, 1, 4).threads, 1);
  EXPECT_EQ(choose_threads(0, env_of({{"SLURM_CPUS_PER_TASK", "x"}}), 8, 2).source, "affinity");
}

TEST(LaunchEnvironment, LauncherRanksPreferMpirunsOverTheBatchStepsSlurmIds) {
  // mpirun inside sbatch: every rank inherits the batch step's SLURM_PROCID=0.
  const auto e = env_of({{"SLURM_PROCID", "0"},
                         {"SLURM_LOCALID", "0"},
                         {"OMPI_COMM_WORLD_RANK", "3"},
                         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  EXPECT_EQ(e.launcher_rank(), 3);
  EXPECT_EQ(e.launcher_local_rank(), 1);
  EXPECT_EQ(env_of({{"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"}}).launcher_rank(), 5);
  EXPECT_EQ(env_of({}).launcher_rank(), -1);
}

TEST(LaunchEnvironment, SrunWithoutAnMpiPluginIsToldApart) {
  const std::map<std::string, std::string> step = {
      {"SLURM_JOB_ID", "9"}, {"SLURM_STEP_ID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}};
  EXPECT_NE(env_of(step).srun_without_mpi_plugin().find("srun --mpi=pmix"), std::string::npos);
  auto with_pmix = step;
  with_pmix["PMIX_RANK"] = "0";
  EXPECT_EQ(env_of(with_pmix).srun_without_mpi_plugin(), "");
  auto one_task = step;
  one_task["SLURM_STEP_NUM_TASKS"] = "1";
  EXPECT_EQ(env_of(one_task).srun_without_mpi_plugin(), "");
  // The batch step itself (no step id) runs one process: fine.
  EXPECT_EQ(env_of({{"SLURM_JOB_ID", "9"}, {"SLURM_NTASKS", "4"}}).srun_without_mpi_plugin(), "");
  // After MPI_Init: a world of 1 in a step of 2 tasks is the same mistake.
  EXPECT_NE(env_of(with_pmix).world_size_mismatch(1), "");
  EXPECT_EQ(env_of(with_pmix).world_size_mismatch(2), "");
}

TEST(LaunchEnvironment, DetectNamesTheLauncher) {
  unsetenv("SLURM_JOB_ID");
  unsetenv("OMPI_COMM_WORLD_SIZE");
  EXPECT_EQ(LaunchEnvironment::detect().launcher, "singleton");
  setenv("SLURM_JOB_ID", "42", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  EXPECT_EQ(LaunchEnvironment::detect().launcher, "slurm+srun");
  EXPECT_EQ(LaunchEnvironment::detect().variables.at("SLURM_JOB_ID"), "42");
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  EXPECT_EQ(LaunchEnvironment::detect().launcher, "slurm+mpirun");
  unsetenv("SLURM_JOB_ID");
  unsetenv("SLURM_STEP_ID");
  EXPECT_EQ(LaunchEnvironment::detect().launcher, "mpirun");
  unsetenv("OMPI_COMM_WORLD_SIZE");
}

}  // namespace
}  // namespace hpctrain
