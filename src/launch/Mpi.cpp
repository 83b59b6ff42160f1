#include "launch/Mpi.hpp"

#include <cstdlib>

#include "util/Error.hpp"

namespace hpctrain {

void mpi_check(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw RuntimeFailure(std::string("MPI call failed: ") + call + ": " + std::string(text, length) + " (" + file + ":" +
                       std::to_string(line) + ")");
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  if (initialized()) return;
  int provided = 0;
  // Serialized: the gradient reducer's communication thread calls MPI while the main
  // thread runs backward, never both at once. LibTorch's worker threads never call MPI.
  HPCTRAIN_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
  owns_ = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiRuntime::~MpiRuntime() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::abort_all(int code) {
  if (initialized()) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

bool MpiRuntime::initialized() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

int MpiRuntime::thread_level() {
  int level = MPI_THREAD_SINGLE;
  if (initialized()) MPI_Query_thread(&level);
  return level;
}

std::string MpiRuntime::library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string s(text, length);
  const auto comma = s.find(',');
  if (comma != std::string::npos) s = s.substr(0, comma);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  int major = 0, minor = 0;
  MPI_Get_version(&major, &minor);
  return s + " (MPI " + std::to_string(major) + "." + std::to_string(minor) + ")";
}

}  // namespace hpctrain
