// hpctrain: entry point. Errors are caught here, reported once, and every rank exits.
#include <cstdio>
#include <string>
#include <vector>

#include "app/CommandLine.hpp"
#include "comm/Communicator.hpp"
#include "io/Hdf5.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "launch/Mpi.hpp"
#include "util/Error.hpp"

int main(int argc, char** argv) {
  using namespace hpctrain;
  std::vector<std::string> args(argv + 1, argv + argc);
  int rank = 0, size = 1;
  // A launch MPI cannot start (srun without its MPI plugin) is told plainly, before MPI_Init
  // would fail with the MPI library's own error stack.
  const LaunchEnvironment launch = LaunchEnvironment::detect();
  if (const std::string problem = launch.srun_without_mpi_plugin(); !problem.empty()) {
    if (launch.launcher_rank() <= 0) std::fprintf(stderr, "hpctrain: %s\n", problem.c_str());
    return 2;
  }
  try {
    MpiRuntime mpi(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    silence_hdf5_errors();
    try {
      return run_command_line(args);
    } catch (const CollectiveError& e) {
      // Every rank agreed on this failure: the rank where it began reports it.
      if (rank == e.origin_rank()) {
        std::fprintf(stderr, "hpctrain: error%s: %s\n",
                     size > 1 ? (" (rank " + std::to_string(rank) + ")").c_str() : "", e.what());
      }
      return e.exit_code();
    } catch (const UsageError& e) {
      // Same arguments on every rank, so the same error everywhere: rank 0 reports it.
      const auto* command = dynamic_cast<const CommandUsageError*>(&e);
      const std::string help = command && !command->command().empty() ? command->command() + " --help" : "--help";
      if (rank == 0) std::fprintf(stderr, "hpctrain: %s\nRun `hpctrain %s` for usage.\n", e.what(), help.c_str());
      return 2;
    } catch (const std::exception& e) {
      // A failure on this rank alone: report it and end the whole job so no rank waits.
      std::fprintf(stderr, "hpctrain: error (rank %d of %d): %s\n", rank, size, e.what());
      std::fflush(stderr);
      if (size > 1) MpiRuntime::abort_all(1);
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hpctrain: error: %s\n", e.what());
    return 1;
  }
}
