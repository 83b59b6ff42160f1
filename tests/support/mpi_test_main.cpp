// GoogleTest main for every test executable: MPI is initialized once (a single process
// becomes a one-rank world), and only rank 0 prints the test listing.
#include <gtest/gtest.h>

#include "io/Hdf5.hpp"
#include "launch/Mpi.hpp"

int main(int argc, char** argv) {
  hpctrain::MpiRuntime mpi(&argc, &argv);
  hpctrain::silence_hdf5_errors();
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  // A failure on any rank fails the whole test.
  int any = failed != 0 ? 1 : 0, global = 0;
  MPI_Allreduce(&any, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return global;
}
