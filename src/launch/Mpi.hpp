#pragma once
// MPI lifetime and checked calls. Every MPI call in hpctrain goes through HPCTRAIN_MPI,
// which turns a failure into an exception naming the call, file and line.
#include <mpi.h>

#include <string>

namespace hpctrain {

void mpi_check(int rc, const char* call, const char* file, int line);

#define HPCTRAIN_MPI(call) ::hpctrain::mpi_check((call), #call, __FILE__, __LINE__)

// Owns MPI_Init_thread/MPI_Finalize. Errors on MPI_COMM_WORLD return codes instead of
// aborting, so they become exceptions with context.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // Ends every rank of the job now (used when one rank fails outside a collective check).
  [[noreturn]] static void abort_all(int code);
  static std::string library_version();
  static bool initialized();
  // The thread support MPI granted (MPI_THREAD_SINGLE ... MPI_THREAD_MULTIPLE).
  static int thread_level();

 private:
  bool owns_ = false;
};

}  // namespace hpctrain
