#include "app/BenchCommands.hpp"

#include <malloc.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>

#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "config/Schema.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "data/Sampling.hpp"
#include "data/ShardedDataset.hpp"
#include "launch/Mpi.hpp"
#include "launch/ProcessLayout.hpp"
#include "models/Model.hpp"
#include "util/Files.hpp"
#include "util/SystemStats.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

const char* kBenchHelp =
    "usage: hpctrain bench allreduce [--min-bytes N] [--max-bytes N] [--bucket-mb MB] [--repeats R] [--json FILE]\n"
    "       hpctrain bench io FILE.h5 [--repeats R] [--json FILE]\n"
    "       hpctrain bench checkpoint [DIR] [--max-bytes N] [--repeats R]\n"
    "\n"
    "allreduce: for each message size (x4 steps), hpctrain's bucketed gradient path (the\n"
    "  overlapping reducer: buckets of --bucket-mb, reduced on its communication thread)\n"
    "  next to one plain MPI_Allreduce of the same bytes, in the same run. Per size: median\n"
    "  time per operation over R repeats (slowest rank), algorithm bandwidth = bytes / time,\n"
    "  bus bandwidth = algbw * 2 (P - 1) / P (as nccl-tests), and their ratio. Every size is\n"
    "  checked: each rank contributes (rank + 1) * (i mod 7) and the sums are compared.\n"
    "io: each rank's collective parallel-HDF5 read of its block of /train/images (the\n"
    "  training shard load) next to one process reading the same bytes sequentially with\n"
    "  serial HDF5, in the same run. Rates are bytes / time of the slowest rank; the page\n"
    "  cache is warm for both (the file is read once before timing).\n"
    "checkpoint [DIR]: the two ways to write a checkpoint of --max-bytes of replicated\n"
    "  state (default 64 MiB) into DIR (default /tmp), in alternation: (a) what hpctrain\n"
    "  does, rank 0 alone: serial HDF5, SHA-256, fsync, rename; (b) every rank writes its\n"
    "  1/N of the bytes into one dataset with collective parallel HDF5 (MPI-IO), hashes\n"
    "  chained in rank order, fsync, rename. Checked: both files read back equal.\n"
    "       hpctrain bench activations CONFIG [key=value ...] [--shape C,H,W] [--classes K]\n"
    "                                 [--steps N] [--every N]\n"
    "activations: the model of CONFIG (one process, random inputs of --shape, default\n"
    "  1,28,28, and train.batch_size rows) trained for N steps (default 5) without and with\n"
    "  gradient checkpointing of every --every-th block (default 1): the heap bytes the\n"
    "  forward pass leaves for backward (activations), and the forward+backward time, medians\n"
    "  over the steps. Checked: both give the same gradients.\n";

struct Options {
  std::int64_t min_bytes = 4096;
  std::int64_t max_bytes = 64ll << 20;
  double bucket_mb = 25.0;
  int repeats = 11;
  std::string json_path;
  std::string file;
};

Options parse(const std::vector<std::string>& args, std::size_t first) {
  Options o;
  for (std::size_t i = first; i < args.size(); ++i) {
    auto value = [&](const std::string& name) {
      if (i + 1 >= args.size()) throw UsageError("bench: " + name + " needs a value");
      return args[++i];
    };
    try {
      if (args[i] == "--min-bytes") {
        o.min_bytes = std::stoll(value(args[i]));
      } else if (args[i] == "--max-bytes") {
        o.max_bytes = std::stoll(value(args[i]));
      } else if (args[i] == "--bucket-mb") {
        o.bucket_mb = std::stod(value(args[i]));
      } else if (args[i] == "--repeats") {
        o.repeats = std::stoi(value(args[i]));
      } else if (args[i] == "--json") {
        o.json_path = value(args[i]);
      } else if (o.file.empty() && args[i].rfind("--", 0) != 0) {
        o.file = args[i];
      } else {
        throw UsageError("bench: unexpected argument \"" + args[i] + "\"");
      }
    } catch (const std::invalid_argument&) {
      throw UsageError("bench: " + args[i] + " expects a number");
    }
  }
  if (o.repeats < 1 || o.min_bytes < 4 || o.max_bytes < o.min_bytes || o.bucket_mb <= 0) {
    throw UsageError("bench: need --repeats >= 1, 4 <= --min-bytes <= --max-bytes, --bucket-mb > 0");
  }
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Time per call of each of `ops`, measured in alternation (a, b, a, b, ...) so that noise
// on a shared machine touches both alike: median over repeats of (time of `iters` calls /
// iters), each repeat's time the slowest rank's.
std::vector<double> time_per_op(const Communicator& comm, int repeats, int iters,
                                const std::vector<std::function<void()>>& ops) {
  std::vector<std::vector<double>> t(ops.size());
  for (const auto& op : ops) op();  // warm-up
  for (int r = 0; r < repeats; ++r) {
    for (std::size_t k = 0; k < ops.size(); ++k) {
      comm.barrier();
      const double t0 = wall_seconds();
      for (int i = 0; i < iters; ++i) ops[k]();
      double dt = (wall_seconds() - t0) / iters;
      comm.allreduce_max(&dt, 1);
      t[k].push_back(dt);
    }
  }
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}

void fill_pattern(float* p, std::int64_t n, int rank) {
  for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<float>((rank + 1) * (i % 7));
}

bool check_pattern(const float* p, std::int64_t n, int size) {
  const float ranks_sum = static_cast<float>(size * (size + 1) / 2);
  for (std::int64_t i = 0; i < n; ++i) {
    if (p[i] != ranks_sum * static_cast<float>(i % 7)) return false;
  }
  return true;
}

void write_json(const std::string& path, const json::value& v) {
  if (path.empty()) return;
  std::ofstream out(path);
  if (!out) throw RuntimeFailure(path + ": cannot write");
  out << pretty_json(v);
}

int bench_allreduce(const Options& o) {
  Communicator world = Communicator::world();
  const int p = world.size();
  const bool root = world.rank() == 0;
  const double bus_factor = p > 1 ? 2.0 * (p - 1) / p : 1.0;
  if (root) {
    std::printf("# hpctrain bench allreduce: %d ranks, buckets of %.3g MiB, median of %d repeats\n", p, o.bucket_mb,
                o.repeats);
    std::printf("# algbw = bytes / time; busbw = algbw * 2(P-1)/P; ratio = hpctrain busbw / MPI_Allreduce busbw\n");
    std::printf("%12s %8s | %10s %9s %9s | %10s %9s %9s | %6s %5s\n", "bytes", "buckets", "mpi us", "algbw GB/s",
                "busbw", "hpc us", "algbw GB/s", "busbw", "ratio", "check");
  }
  json::array rows;
  bool all_ok = true;
  for (std::int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) {
    const std::int64_t n = bytes / 4;
    // Enough operations per repeat to take about 20 ms, so the clock's resolution and the
    // barrier do not dominate small sizes.
    const int iters =
        static_cast<int>(std::clamp<std::int64_t>((20ll << 20) / std::max<std::int64_t>(bytes, 1), 1, 2000));
    auto buffer = torch::zeros({n}, torch::kFloat);
    // The same bytes as a model's gradients: 16 tensors, the reducer's buckets over them.
    std::vector<torch::Tensor> params;
    const std::int64_t pieces = std::min<std::int64_t>(16, n);
    for (std::int64_t k = 0; k < pieces; ++k) {
      const std::int64_t len = n / pieces + (k < n % pieces ? 1 : 0);
      params.push_back(torch::zeros({len}, torch::requires_grad()));
    }
    GradientReducer reducer(params, o.bucket_mb, world, true);
    const auto times = time_per_op(world, o.repeats, iters,
                                   {[&] { world.allreduce_sum(buffer.data_ptr<float>(), n); },
                                    [&] {
                                      reducer.begin_step();
                                      reducer.finish();
                                    }});
    const double t_mpi = times[0], t_hpc = times[1];
    fill_pattern(buffer.data_ptr<float>(), n, world.rank());
    world.allreduce_sum(buffer.data_ptr<float>(), n);
    bool ok = check_pattern(buffer.data_ptr<float>(), n, p);

    // Correctness through the same path.
    for (std::size_t b = 0; b < reducer.buckets().size(); ++b) {
      fill_pattern(reducer.buckets()[b].data_ptr<float>(), reducer.buckets()[b].numel(), world.rank());
    }
    reducer.begin_step();
    reducer.finish();
    for (const auto& b : reducer.buckets()) ok = ok && check_pattern(b.data_ptr<float>(), b.numel(), p);
    std::int64_t fails = ok ? 0 : 1;
    world.allreduce_sum(&fails, 1);
    all_ok = all_ok && fails == 0;

    const double alg_mpi = static_cast<double>(bytes) / t_mpi / 1e9, alg_hpc = static_cast<double>(bytes) / t_hpc / 1e9;
    const double ratio = alg_hpc / alg_mpi;
    if (root) {
      std::printf("%12lld %8zu | %10.1f %9.3f %9.3f | %10.1f %9.3f %9.3f | %6.3f %5s\n", static_cast<long long>(bytes),
                  reducer.bucket_count(), t_mpi * 1e6, alg_mpi, alg_mpi * bus_factor, t_hpc * 1e6, alg_hpc,
                  alg_hpc * bus_factor, ratio, fails == 0 ? "ok" : "FAIL");
      std::fflush(stdout);
    }
    rows.push_back(json::object{{"bytes", bytes},
                                {"buckets", static_cast<std::int64_t>(reducer.bucket_count())},
                                {"mpi_us", t_mpi * 1e6},
                                {"mpi_busbw_gbs", alg_mpi * bus_factor},
                                {"hpctrain_us", t_hpc * 1e6},
                                {"hpctrain_busbw_gbs", alg_hpc * bus_factor},
                                {"ratio", ratio},
                                {"correct", fails == 0}});
  }
  if (root) {
    write_json(o.json_path, json::object{{"benchmark", "allreduce"},
                                         {"ranks", p},
                                         {"bucket_mb", o.bucket_mb},
                                         {"repeats", o.repeats},
                                         {"rows", rows}});
  }
  if (!all_ok) throw RuntimeFailure("bench allreduce: a reduction gave a wrong sum");
  return 0;
}

int bench_io(const Options& o) {
  if (o.file.empty()) throw UsageError("bench io: name the HDF5 file");
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
  const double shard_rate = static_cast<double>(total) / median(t_shard) / 1e9;
  const double seq_rate = static_cast<double>(total) / median(t_seq) / 1e9;
  if (root) {
    std::printf("# hpctrain bench io %s: /train/images, %lld bytes, %d ranks, median of %d repeats (warm cache)\n",
                o.file.c_str(), static_cast<long long>(total), world.size(), o.repeats);
    std::printf("%-44s %10s %10s\n", "read", "seconds", "GB/s");
    std::printf("%-44s %10.4f %10.3f\n", "shard load (collective MPI-IO, all ranks)", median(t_shard), shard_rate);
    std::printf("%-44s %10.4f %10.3f\n", "sequential (one process, serial HDF5)", median(t_seq), seq_rate);
    std::printf("ratio shard/sequential %.3f; bytes %s\n", shard_rate / seq_rate,
                ok ? "identical (sha256 matches the stored hash)" : "DIFFER");
    write_json(o.json_path, json::object{{"benchmark", "io"},
                                         {"file", o.file},
                                         {"ranks", world.size()},
                                         {"bytes", total},
                                         {"shard_seconds", median(t_shard)},
                                         {"sequential_seconds", median(t_seq)},
                                         {"shard_gbs", shard_rate},
                                         {"sequential_gbs", seq_rate},
                                         {"ratio", shard_rate / seq_rate},
                                         {"correct", ok}});
  }
  if (!ok) throw RuntimeFailure("bench io: shard bytes differ from the sequential read");
  return 0;
}

}  // namespace

int bench_checkpoint(const Options& o) {
  Communicator world = Communicator::world();
  const bool root = world.rank() == 0;
  const std::string dir = o.file.empty() ? "/tmp" : o.file;
  const std::int64_t n = std::max<std::int64_t>(world.size(), o.max_bytes / 4);  // float32 elements
  // The replicated state every rank holds (parameters and optimizer moments).
  std::vector<float> state(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) state[static_cast<std::size_t>(i)] = static_cast<float>(i % 1013) * 0.5f;
  // One name for all ranks (the parallel file is opened collectively): rank 0's process id.
  std::int64_t id = ::getpid();
  world.broadcast(&id, sizeof(id), 0);
  const std::string serial_path = dir + "/hpctrain_bench_serial_" + std::to_string(id) + ".h5";
  const std::string parallel_path = dir + "/hpctrain_bench_parallel_" + std::to_string(id) + ".h5";
  auto serial = [&] {
    if (!root) return;
    const std::string tmp = serial_path + ".tmp";
    {
      H5File f = H5File::create(tmp);
      hsize_t dims[1] = {static_cast<hsize_t>(n)};
      H5Id space(h5_check(H5Screate_simple(1, dims, nullptr), tmp));
      H5Id ds(
          h5_check(H5Dcreate2(f.id(), "/state", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), tmp));
      h5_check(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, state.data()), tmp);
      f.write_string_attr("/", "sha256", Sha256::hex(state.data(), state.size() * sizeof(float)));
    }
    sync_file(tmp);
    std::rename(tmp.c_str(), serial_path.c_str());
  };
  auto parallel = [&] {
    const std::string tmp = parallel_path + ".tmp";
    const Range mine = block_range(n, world.size(), world.rank());
    {
      H5Id fapl(h5_check(H5Pcreate(H5P_FILE_ACCESS), tmp));
      h5_check(H5Pset_fapl_mpio(fapl, world.raw(), MPI_INFO_NULL), tmp);
      H5Id file(h5_check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), tmp));
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
    if (root) {
      sync_file(tmp);
      std::rename(tmp.c_str(), parallel_path.c_str());
    }
    world.barrier();
  };
  const auto t = time_per_op(world, o.repeats, 1, {serial, parallel});
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
                o.repeats, dir.c_str());
    std::printf("  (a) rank 0, serial HDF5 + SHA-256 + fsync: %8.2f ms  %7.1f MB/s\n", 1e3 * t[0], mb / t[0]);
    std::printf("  (b) all ranks, parallel HDF5 + chained SHA-256 + fsync: %8.2f ms  %7.1f MB/s\n", 1e3 * t[1],
                mb / t[1]);
    std::printf("  ratio (b)/(a): %.2f; files read back equal: %s\n", t[1] / t[0], same ? "yes" : "NO");
    std::remove(serial_path.c_str());
    std::remove(parallel_path.c_str());
  }
  if (!same) throw RuntimeFailure("bench checkpoint: the files differ");
  return 0;
}

// Bytes in use on the heap (small blocks and mmapped ones): what LibTorch's CPU tensors hold.
std::int64_t heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<std::int64_t>(m.uordblks + m.hblkhd);
}

int bench_activations(const std::vector<std::string>& args) {
  if (args.size() < 2) throw UsageError("bench activations: name the config");
  std::vector<std::string> overrides;
  std::vector<std::int64_t> shape{1, 28, 28};
  std::int64_t classes = 10, steps = 5, every = 1;
  for (std::size_t i = 2; i < args.size(); ++i) {
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError("bench activations: " + args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--shape") {
      shape.clear();
      std::stringstream list(value());
      for (std::string d; std::getline(list, d, ',');) shape.push_back(std::stoll(d));
    } else if (args[i] == "--classes") {
      classes = std::stoll(value());
    } else if (args[i] == "--steps") {
      steps = std::max<std::int64_t>(1, std::stoll(value()));
    } else if (args[i] == "--every") {
      every = std::max<std::int64_t>(1, std::stoll(value()));
    } else {
      overrides.push_back(args[i]);
    }
  }
  ResolvedConfig rc = load_config(args[1], overrides);
  const std::int64_t batch = rc.config.train.batch_size;
  std::vector<std::int64_t> input_shape{batch};
  input_shape.insert(input_shape.end(), shape.begin(), shape.end());
  torch::manual_seed(3);
  const auto x = torch::randn(input_shape);
  const auto y = torch::randint(0, classes, {batch});
  struct Row {
    double activation_bytes, step_ms;
    std::vector<torch::Tensor> grads;
    std::int64_t parameters;
  };
  // Both models (same initial parameters) step in alternation, so machine noise hits both.
  auto make = [&](std::int64_t checkpoint_every) {
    ModelConfig mc = rc.config.model;
    mc.checkpoint_every = checkpoint_every;
    torch::manual_seed(1);
    auto model = build_model(mc, InputSpec{shape, classes});
    model->train();
    return model;
  };
  std::vector<ModelPtr> models{make(0), make(every)};
  std::vector<std::vector<double>> act(2), ms(2);
  for (std::int64_t s = 0; s <= steps; ++s) {  // step 0 warms up (allocates the gradients)
    for (std::size_t m = 0; m < 2; ++m) {
      for (auto& p : models[m]->parameters()) {
        if (p.grad().defined()) p.mutable_grad().zero_();
      }
      torch::manual_seed(7 + s);
      const std::int64_t before = heap_in_use();
      const double t0 = wall_seconds();
      auto loss = torch::nn::functional::cross_entropy(models[m]->forward(x), y);
      const std::int64_t after = heap_in_use();
      loss.backward();
      const double t1 = wall_seconds();
      if (s > 0) {
        act[m].push_back(static_cast<double>(after - before));
        ms[m].push_back(1000.0 * (t1 - t0));
      }
    }
  }
  auto row = [&](std::size_t m) {
    Row r{median(act[m]), median(ms[m]), {}, parameter_count(*models[m])};
    for (auto& p : models[m]->parameters()) r.grads.push_back(p.grad().clone());
    return r;
  };
  const Row plain = row(0), checkpointed = row(1);
  bool same = plain.grads.size() == checkpointed.grads.size();
  for (std::size_t i = 0; same && i < plain.grads.size(); ++i)
    same = torch::equal(plain.grads[i], checkpointed.grads[i]);
  std::printf("model %s, %lld parameters, batch %lld, input %s, %lld steps (medians)\n", rc.config.model.name.c_str(),
              static_cast<long long>(plain.parameters), static_cast<long long>(batch), args[1].c_str(),
              static_cast<long long>(steps));
  std::printf("%-28s %16s %14s\n", "", "activations MB", "step ms");
  std::printf("%-28s %16.1f %14.1f\n", "plain", plain.activation_bytes / 1048576.0, plain.step_ms);
  std::printf("%-28s %16.1f %14.1f\n", ("checkpoint every " + std::to_string(every) + " block(s)").c_str(),
              checkpointed.activation_bytes / 1048576.0, checkpointed.step_ms);
  std::printf("activation memory %.1f%% less, step time %+.1f%%; gradients %s\n",
              100.0 * (1.0 - checkpointed.activation_bytes / std::max(1.0, plain.activation_bytes)),
              100.0 * (checkpointed.step_ms / plain.step_ms - 1.0), same ? "identical" : "DIFFER");
  if (!same) throw RuntimeFailure("bench activations: checkpointing changed the gradients");
  return 0;
}

void plan_on_this_rank(const std::string& config_path, const std::vector<std::string>& overrides, double budget_gib,
                       std::int64_t ranks);

const char* kPlanHelp =
    "usage: [mpirun -np N] hpctrain plan CONFIG [key=value ...] [--budget GiB] [--ranks N]\n"
    "\n"
    "Per-rank memory of training CONFIG: parameters, gradients, optimizer state, and the\n"
    "activations at the per-rank batch (train.batch_size / ranks; --ranks, default the\n"
    "launch's), without and with gradient checkpointing of every block. Activations are\n"
    "measured on probe steps of the model at per-rank batches of 2 and 4 (one process, CPU,\n"
    "random inputs of the data set's sample shape) and extrapolated linearly. With --budget,\n"
    "the largest per-rank batch whose total fits, with and without checkpointing.\n";

int cmd_plan(const std::vector<std::string>& args) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    if (rank == 0) std::printf("%s", kPlanHelp);
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> overrides;
  double budget_gib = 0;
  std::int64_t ranks = size;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if ((args[i] == "--budget" || args[i] == "--ranks") && i + 1 < args.size()) {
      const std::string v = args[++i];
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (*end != '\0' || x <= 0)
        throw UsageError("plan: " + args[i - 1] + " needs a positive number, not \"" + v + "\"");
      if (args[i - 1] == "--budget") {
        budget_gib = x;
      } else {
        ranks = static_cast<std::int64_t>(x);
      }
    } else if (args[i].rfind("--", 0) == 0) {
      throw UsageError("plan: unknown option " + args[i]);
    } else {
      overrides.push_back(args[i]);
    }
  }
  // One process measures; the others wait for it, and every rank exits with its error's code.
  Communicator world = Communicator::world();
  collective_check(world, [&] {
    if (rank == 0) plan_on_this_rank(args[0], overrides, budget_gib, ranks);
  });
  return 0;
}

void plan_on_this_rank(const std::string& config_path, const std::vector<std::string>& overrides, double budget_gib,
                       std::int64_t ranks) {
  const ResolvedConfig rc = load_config(config_path, overrides);
  const Config& c = rc.config;
  DatasetMeta meta;
  {
    H5File file = H5File::open_read_serial(c.data.path);
    meta = read_dataset_meta(file);
  }
  // As the trainer builds it: classes, or per target value one output (or one per quantile level).
  const std::int64_t outputs =
      meta.num_classes > 0
          ? meta.num_classes
          : meta.target_width * (c.train.loss == "quantile"
                                     ? std::max<std::int64_t>(1, static_cast<std::int64_t>(c.train.quantiles.size()))
                                     : 1);
  const std::int64_t batch = (c.train.batch_size + ranks - 1) / ranks;
  torch::set_num_threads(std::max(1, ProcessLayout::discover(MPI_COMM_SELF).default_threads()));

  // Activation bytes at per-rank batch b: the heap the forward leaves for backward.
  auto probe = [&](std::int64_t every, std::int64_t b) {
    ModelConfig mc = c.model;
    mc.checkpoint_every = every;
    if (every == 0) mc.checkpoint_blocks.clear();
    torch::manual_seed(1);
    auto model = build_model(mc, InputSpec{meta.sample_shape, outputs});
    model->train();
    std::vector<std::int64_t> shape{b};
    shape.insert(shape.end(), meta.sample_shape.begin(), meta.sample_shape.end());
    const auto x = torch::randn(shape);
    const auto y = torch::randint(0, std::max<std::int64_t>(2, outputs), {b});
    double bytes = 0;
    for (int s = 0; s < 2; ++s) {  // the first step allocates the gradients
      for (auto& p : model->parameters()) {
        if (p.grad().defined()) p.mutable_grad().zero_();
      }
      const std::int64_t before = heap_in_use();
      auto out = model->forward(x);
      auto loss = outputs > 1 ? torch::nn::functional::cross_entropy(out, y) : out.pow(2).mean();
      bytes = static_cast<double>(heap_in_use() - before);
      loss.backward();
    }
    return std::make_pair(bytes, parameter_count(*model));
  };
  struct Line {
    double per_sample, fixed;
  };
  auto fit = [&](std::int64_t every) {
    const auto a = probe(every, 2).first, b = probe(every, 4).first;
    const double per = std::max(0.0, (b - a) / 2.0);
    return Line{per, std::max(0.0, a - 2.0 * per)};
  };
  const std::int64_t params = probe(0, 1).second;
  const double p_bytes = static_cast<double>(params) * 4.0;
  const double opt_states = c.optimizer.name == "sgd" ? (c.optimizer.momentum > 0 ? 1.0 : 0.0) : 2.0;
  const double fixed = p_bytes * (2.0 + opt_states);  // parameters, gradient buckets, optimizer state
  const Line plain = fit(0), checkpointed = fit(1);
  auto act = [&](const Line& l, std::int64_t b) { return l.fixed + l.per_sample * static_cast<double>(b); };
  const double mib = 1048576.0;
  std::printf("plan: %s, model %s, %lld parameters, %lld rank(s), per-rank batch %lld, sample shape [",
              config_path.c_str(), c.model.name.c_str(), static_cast<long long>(params), static_cast<long long>(ranks),
              static_cast<long long>(batch));
  for (std::size_t i = 0; i < meta.sample_shape.size(); ++i)
    std::printf("%s%lld", i ? ", " : "", static_cast<long long>(meta.sample_shape[i]));
  std::printf("]\n\n%-40s %12s\n", "per rank", "MiB");
  std::printf("%-40s %12.1f\n", "parameters (fp32)", p_bytes / mib);
  std::printf("%-40s %12.1f\n", "gradients (fp32 buckets)", p_bytes / mib);
  std::printf("%-40s %12.1f\n", ("optimizer state (" + c.optimizer.name + ")").c_str(), p_bytes * opt_states / mib);
  std::printf("%-40s %12.1f\n", "activations, no checkpointing", act(plain, batch) / mib);
  std::printf("%-40s %12.1f\n", "activations, checkpointing every block", act(checkpointed, batch) / mib);
  std::printf("%-40s %12.1f\n", "total, no checkpointing", (fixed + act(plain, batch)) / mib);
  std::printf("%-40s %12.1f\n", "total, checkpointing every block", (fixed + act(checkpointed, batch)) / mib);
  std::printf("\nactivations per sample: %.2f MiB without, %.2f MiB with checkpointing (probe batches 2 and 4)\n",
              plain.per_sample / mib, checkpointed.per_sample / mib);
  if (budget_gib > 0) {
    const double budget = budget_gib * 1024.0 * mib;
    auto largest = [&](const Line& l) {
      const double room = budget - fixed - l.fixed;
      if (room <= 0) return std::int64_t{0};
      return l.per_sample > 0 ? static_cast<std::int64_t>(room / l.per_sample) : std::int64_t{1} << 40;
    };
    std::printf("budget %.2f GiB per rank: largest per-rank batch %lld without, %lld with checkpointing\n", budget_gib,
                static_cast<long long>(largest(plain)), static_cast<long long>(largest(checkpointed)));
  }
}

int run_bench_command(const std::vector<std::string>& args) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    if (rank == 0) std::printf("%s", kBenchHelp);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "activations") {
    torch::set_num_threads(ProcessLayout::discover(MPI_COMM_WORLD).default_threads());
    return bench_activations(args);
  }
  const Options o = parse(args, 1);
  // As in training: intra-op threads from the affinity mask, so idle OpenMP workers do not
  // spin on the cores the communication thread needs.
  torch::set_num_threads(ProcessLayout::discover(MPI_COMM_WORLD).default_threads());
  if (args[0] == "allreduce") return bench_allreduce(o);
  if (args[0] == "io") return bench_io(o);
  if (args[0] == "checkpoint") return bench_checkpoint(o);
  throw UsageError("bench: unknown benchmark \"" + args[0] + "\" (allreduce, io, checkpoint, activations)");
}

}  // namespace hpctrain
