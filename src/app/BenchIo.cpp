// `hpctrain bench io FILE.h5`: the training shard load (collective parallel HDF5) next to one
// process reading the same bytes sequentially, with a check that the bytes agree.
#include <cstdio>
#include <memory>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "comm/Communicator.hpp"
#include "data/Sampling.hpp"
#include "data/ShardedDataset.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace json = boost::json;

namespace {

struct IoArguments {
  std::string file;
  int repeats = 11;
  std::string json_path;
};

void print_result(const IoArguments& o, int ranks, std::int64_t total, double t_shard, double t_seq, bool ok) {
  const double shard_rate = static_cast<double>(total) / t_shard / 1e9;
  const double seq_rate = static_cast<double>(total) / t_seq / 1e9;
  std::printf("# hpctrain bench io %s: /train/images, %lld bytes, %d ranks, median of %d repeats (warm cache)\n",
              o.file.c_str(), static_cast<long long>(total), ranks, o.repeats);
  std::printf("%-44s %10s %10s\n", "read", "seconds", "GB/s");
  std::printf("%-44s %10.4f %10.3f\n", "shard load (collective MPI-IO, all ranks)", t_shard, shard_rate);
  std::printf("%-44s %10.4f %10.3f\n", "sequential (one process, serial HDF5)", t_seq, seq_rate);
  std::printf("ratio shard/sequential %.3f; bytes %s\n", shard_rate / seq_rate,
              ok ? "identical (sha256 matches the stored hash)" : "DIFFER");
  write_json_file(o.json_path, json::object{{"benchmark", "io"},
                                            {"file", o.file},
                                            {"ranks", ranks},
                                            {"bytes", total},
                                            {"shard_seconds", t_shard},
                                            {"sequential_seconds", t_seq},
                                            {"shard_gbs", shard_rate},
                                            {"sequential_gbs", seq_rate},
                                            {"ratio", shard_rate / seq_rate},
                                            {"correct", ok}});
}

int bench_io(const IoArguments& o) {
  use_default_threads();
  Communicator world = Communicator::world();
  const bool root = world.rank() == 0;
  DatasetMeta meta;
  collective_check(world, [&] {
    H5File f = H5File::open_read_serial(o.file);
    meta = read_dataset_meta(f);
  });
  const std::int64_t rows = meta.train.count, row_bytes = meta.sample_bytes();
  const hid_t input_type = meta.float_inputs() ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8;
  const std::int64_t total = rows * row_bytes;
  const Range mine = block_range(rows, world.size(), world.rank());
  std::vector<std::uint8_t> shard(static_cast<std::size_t>(mine.size() * row_bytes));
  std::vector<std::uint8_t> whole(root ? static_cast<std::size_t>(total) : 0);

  auto shard_load = [&] {
    H5File f = H5File::open_read(o.file, world.raw());
    read_rows(f, meta.inputs_path("train"), mine.begin, mine.size(), input_type, shard.data());
  };
  auto sequential = [&] {
    if (!root) return;
    H5File f = H5File::open_read_serial(o.file);
    read_rows(f, meta.inputs_path("train"), 0, rows, input_type, whole.data());
  };
  std::vector<double> t_shard, t_seq;
  collective_check(world, [&] {
    shard_load();  // warm the page cache
    sequential();
  });
  for (int r = 0; r < o.repeats; ++r) {
    world.barrier();
    double t0 = wall_seconds();
    shard_load();
    double dt = wall_seconds() - t0;
    world.allreduce_max(&dt, 1);
    t_shard.push_back(dt);
    world.barrier();
    t0 = wall_seconds();
    sequential();
    dt = wall_seconds() - t0;
    world.allreduce_max(&dt, 1);
    t_seq.push_back(dt);
  }
  // Correctness: the shards, concatenated in rank order, are the sequential read's bytes.
  std::string digest_shards = chained_sha256(shard.data(), shard.size(), world);
  std::string digest_whole = root ? Sha256::hex(whole.data(), whole.size()) : "";
  world.broadcast(digest_whole, 0);
  const bool ok = digest_shards == digest_whole && digest_whole == meta.train.inputs_sha256;
  if (root) print_result(o, world.size(), total, median(t_shard), median(t_seq), ok);
  if (!ok) throw RuntimeFailure("bench io: shard bytes differ from the sequential read");
  return 0;
}

}  // namespace

void add_bench_io(CLI::App& bench, Commands& commands) {
  auto o = std::make_shared<IoArguments>();
  CLI::App* app = bench.add_subcommand("io", "the parallel shard load vs one sequential read");
  app->group("Benchmarks");
  app->footer(
      "Each rank's collective parallel-HDF5 read of its block of /train/images (the training\n"
      "shard load) next to one process reading the same bytes sequentially with serial HDF5, in\n"
      "the same run. Rates are bytes / time of the slowest rank; the page cache is warm for both\n"
      "(the file is read once before timing).");
  app->add_option("FILE", o->file, "a data set in hpctrain's HDF5 layout")->required()->type_name("FILE.h5");
  app->add_option("--repeats", o->repeats, "repeats (the median is reported)")
      ->check(integer_at_least(1))
      ->type_name("R")
      ->capture_default_str();
  app->add_option("--json", o->json_path, "also write the figures as JSON")->type_name("FILE");
  commands.push_back({app, [o] { return bench_io(*o); }});
}

}  // namespace hpctrain
