// `hpctrain bench checkpoint [DIR]`: the two ways to write a checkpoint of replicated state,
// rank 0 alone with serial HDF5 (what hpctrain does) against every rank with parallel HDF5.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "comm/Communicator.hpp"
#include "data/Sampling.hpp"
#include "data/ShardedDataset.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {

namespace {

struct CheckpointArguments {
  std::string dir = "/tmp";
  std::int64_t max_bytes = 64ll << 20;
  int repeats = 11;
};

// (a) Rank 0 alone: serial HDF5, SHA-256, fsync, rename, fsync of the folder (as checkpoints).
void write_serial(const std::string& path, const std::vector<float>& state) {
  write_hdf5_atomically(path, [&](H5File& f) {
    const std::string& tmp = f.path();
    hsize_t dims[1] = {static_cast<hsize_t>(state.size())};
    H5Id space(h5_check(H5Screate_simple(1, dims, nullptr), tmp));
    H5Id ds(h5_check(H5Dcreate2(f.id(), "/state", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), tmp));
    h5_check(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, state.data()), tmp);
    f.write_string_attr("/", "sha256", Sha256::hex(state.data(), state.size() * sizeof(float)));
  });
}

// (b) Every rank its 1/N of the bytes into one dataset, collective parallel HDF5 (MPI-IO),
// hashes chained in rank order, fsync, rename, fsync of the folder.
void write_parallel(const std::string& path, const std::vector<float>& state, const Communicator& world) {
  const std::string tmp = path + ".tmp";
  const std::int64_t n = static_cast<std::int64_t>(state.size());
  const Range mine = block_range(n, world.size(), world.rank());
  {
    H5Id fapl(h5_check(H5Pcreate(H5P_FILE_ACCESS), tmp));
    h5_check(H5Pset_fapl_mpio(fapl, world.raw(), MPI_INFO_NULL), tmp);
    H5Id file(h5_check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), tmp));
    {
      hsize_t dims[1] = {static_cast<hsize_t>(n)};
      H5Id space(h5_check(H5Screate_simple(1, dims, nullptr), tmp));
      H5Id ds(h5_check(H5Dcreate2(file, "/state", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), tmp));
      hsize_t start[1] = {static_cast<hsize_t>(mine.begin)}, count[1] = {static_cast<hsize_t>(mine.size())};
      h5_check(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr), tmp);
      H5Id mem(h5_check(H5Screate_simple(1, count, nullptr), tmp));
      H5Id dxpl(h5_check(H5Pcreate(H5P_DATASET_XFER), tmp));
      h5_check(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), tmp);
      h5_check(H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, dxpl, state.data() + mine.begin), tmp);
      // The checksum chained through the ranks' slices, as the data loader verifies.
      const std::string hex =
          chained_sha256(state.data() + mine.begin, static_cast<std::size_t>(mine.size()) * sizeof(float), world);
      (void)hex;
    }
    file.close(tmp);  // collective; its objects closed above, as parallel HDF5 requires
  }
  if (world.rank() == 0) publish_file(tmp, path);
  world.barrier();
}

int bench_checkpoint(const CheckpointArguments& o) {
  use_default_threads();
  Communicator world = Communicator::world();
  const bool root = world.rank() == 0;
  const std::int64_t n = std::max<std::int64_t>(world.size(), o.max_bytes / 4);  // float32 elements
  // The replicated state every rank holds (parameters and optimizer moments).
  std::vector<float> state(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) state[static_cast<std::size_t>(i)] = static_cast<float>(i % 1013) * 0.5f;
  // One name for all ranks (the parallel file is opened collectively): rank 0's process id.
  std::int64_t id = ::getpid();
  world.broadcast(&id, sizeof(id), 0);
  const std::string serial_path = o.dir + "/hpctrain_bench_serial_" + std::to_string(id) + ".h5";
  const std::string parallel_path = o.dir + "/hpctrain_bench_parallel_" + std::to_string(id) + ".h5";
  const auto t = time_per_op(world, o.repeats, 1,
                             {[&] {
                                if (root) write_serial(serial_path, state);
                              },
                              [&] { write_parallel(parallel_path, state, world); }});
  bool same = true;
  collective_check(world, [&] {
    if (!root) return;
    std::vector<float> a(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n));
    H5File fa = H5File::open_read_serial(serial_path), fb = H5File::open_read_serial(parallel_path);
    read_rows(fa, "/state", 0, n, H5T_NATIVE_FLOAT, a.data());
    read_rows(fb, "/state", 0, n, H5T_NATIVE_FLOAT, b.data());
    same = a == b && a == state;
  });
  if (root) {
    const double mb = static_cast<double>(n) * 4.0 / 1e6;
    std::printf("checkpoint write of %.1f MB, %d ranks, median of %d (alternating), files in %s\n", mb, world.size(),
                o.repeats, o.dir.c_str());
    std::printf("  (a) rank 0, serial HDF5 + SHA-256 + fsync: %8.2f ms  %7.1f MB/s\n", 1e3 * t[0], mb / t[0]);
    std::printf("  (b) all ranks, parallel HDF5 + chained SHA-256 + fsync: %8.2f ms  %7.1f MB/s\n", 1e3 * t[1],
                mb / t[1]);
    std::printf("  ratio (b)/(a): %.2f; files read back equal: %s\n", t[1] / t[0], same ? "yes" : "NO");
    remove_file(serial_path);
    remove_file(parallel_path);
  }
  if (!same) throw RuntimeFailure("bench checkpoint: the files differ");
  return 0;
}

}  // namespace

void add_bench_checkpoint(CLI::App& bench, Commands& commands) {
  auto o = std::make_shared<CheckpointArguments>();
  CLI::App* app = bench.add_subcommand("checkpoint", "checkpoint writes: rank 0 serial vs all ranks parallel HDF5");
  app->group("Benchmarks");
  app->footer(
      "The two ways to write a checkpoint of --max-bytes of replicated state into DIR, in\n"
      "alternation: (a) what hpctrain does, rank 0 alone: serial HDF5, SHA-256, fsync, rename;\n"
      "(b) every rank writes its 1/N of the bytes into one dataset with collective parallel HDF5\n"
      "(MPI-IO), hashes chained in rank order, fsync, rename. Checked: both files read back equal.");
  app->add_option("DIR", o->dir, "folder for the two files (removed afterwards)")
      ->type_name("DIR")
      ->capture_default_str();
  app->add_option("--max-bytes", o->max_bytes, "bytes of state")
      ->check(integer_at_least(4))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--repeats", o->repeats, "repeats (the median is reported)")
      ->check(integer_at_least(1))
      ->type_name("R")
      ->capture_default_str();
  commands.push_back({app, [o] { return bench_checkpoint(*o); }});
}

}  // namespace hpctrain
