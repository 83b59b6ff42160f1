// `hpctrain bench allreduce`: hpctrain's bucketed gradient reduction, flat and hierarchical
// (node-aware), driven as a training step drives it, next to one plain MPI_Allreduce of the
// same bytes, per message size, with algorithm and bus bandwidth.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "comm/HierarchicalSum.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace json = boost::json;

namespace {

struct AllreduceArguments {
  std::int64_t min_bytes = 4096;
  std::int64_t max_bytes = 64ll << 20;
  double bucket_mb = 25.0;
  int repeats = 11;
  double gap_ms = 0;
  std::string json_path;
};

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

void print_header(const AllreduceArguments& o, int ranks, const HierarchicalSum& hier) {
  std::printf("# hpctrain bench allreduce: %d ranks (%s), buckets of %.3g MiB, median of %d repeats", ranks,
              hier.describe().c_str(), o.bucket_mb, o.repeats);
  if (o.gap_ms > 0) std::printf(", %.3g ms busy before each operation", o.gap_ms);
  std::printf("\n");
  std::printf(
      "# algbw = bytes / time; busbw = algbw * 2(P-1)/P; ratio = busbw / MPI_Allreduce busbw; hier = "
      "comm.hierarchical=on "
      "(in flight, on equal nodes: ring reduce-scatter in the node, peers' rings, ring all-gather)\n");
  std::printf("%12s %8s | %10s %9s | %10s %9s %6s | %10s %9s %6s | %5s\n", "bytes", "buckets", "mpi us", "busbw",
              "hpc us", "busbw", "ratio", "hier us", "busbw", "ratio", "check");
}

// The reducer as a training step drives it: backward's hooks mark the gradients ready in
// reverse order (each full bucket starts on the communication thread, non-blocking, while
// the main thread goes on), then the main thread waits in finish().
void reduce_as_training(GradientReducer& reducer, std::int64_t parameters) {
  reducer.begin_step();
  // Slots are in backward's order (the last parameters first), as the hooks fire.
  for (std::int64_t k = 0; k < parameters; ++k) reducer.on_gradient_ready(static_cast<std::size_t>(k));
  reducer.finish();
}

// The reducer's buckets filled with the check pattern, reduced as in training, and checked.
bool reducer_sums_right(GradientReducer& reducer, std::int64_t parameters, const Communicator& world) {
  reducer.zero();  // the parameters' gradients are views of the buckets, as in training
  for (const auto& b : reducer.buckets()) fill_pattern(b.data_ptr<float>(), b.numel(), world.rank());
  reduce_as_training(reducer, parameters);
  bool correct = true;
  for (const auto& b : reducer.buckets())
    correct = correct && check_pattern(b.data_ptr<float>(), b.numel(), world.size());
  return correct;
}

// One message size: the three paths timed, then each checked.
json::object measure_size(const AllreduceArguments& o, const Communicator& world, std::int64_t bytes, bool& ok) {
  const int p = world.size();
  const double bus_factor = p > 1 ? 2.0 * (p - 1) / p : 1.0;
  const std::int64_t n = bytes / 4;
  // Enough operations per repeat to take about 20 ms, so the clock's resolution and the
  // barrier do not dominate small sizes; with a gap, at most 8 (each is timed alone).
  const int iters = static_cast<int>(
      std::clamp<std::int64_t>((20ll << 20) / std::max<std::int64_t>(bytes, 1), 1, o.gap_ms > 0 ? 8 : 2000));
  auto buffer = torch::zeros({n}, torch::kFloat);
  // The same bytes as a model's gradients: 16 tensors, a reducer's buckets over them; one
  // reducer flat, one with comm.hierarchical=on, each over its own tensors (a gradient is a
  // view of one reducer's bucket: shared tensors would copy it into the other's each time).
  const std::int64_t pieces = std::min<std::int64_t>(16, n);
  auto gradients = [&] {
    std::vector<torch::Tensor> params;
    for (std::int64_t k = 0; k < pieces; ++k) {
      const std::int64_t len = n / pieces + (k < n % pieces ? 1 : 0);
      params.push_back(torch::zeros({len}, torch::requires_grad()));
    }
    return params;
  };
  GradientReducer flat(gradients(), o.bucket_mb, world, true);
  GradientReducer hier(gradients(), o.bucket_mb, world, true);
  hier.use_hierarchical(make_hierarchical_sum(world, "on"));
  flat.zero();  // gradients as views of the buckets: the hooks copy nothing, as in training
  hier.zero();
  const auto times = time_per_op(world, o.repeats, iters,
                                 {[&] { world.allreduce_sum(buffer.data_ptr<float>(), n); },
                                  [&] { reduce_as_training(flat, pieces); }, [&] { reduce_as_training(hier, pieces); }},
                                 o.gap_ms * 1e-3);
  const double t_mpi = times[0], t_hpc = times[1], t_hier = times[2];
  fill_pattern(buffer.data_ptr<float>(), n, world.rank());
  world.allreduce_sum(buffer.data_ptr<float>(), n);
  bool correct = check_pattern(buffer.data_ptr<float>(), n, p);
  correct = reducer_sums_right(flat, pieces, world) && correct;
  correct = reducer_sums_right(hier, pieces, world) && correct;
  std::int64_t fails = correct ? 0 : 1;
  world.allreduce_sum(&fails, 1);
  ok = fails == 0;

  const double alg_mpi = static_cast<double>(bytes) / t_mpi / 1e9, alg_hpc = static_cast<double>(bytes) / t_hpc / 1e9;
  const double alg_hier = static_cast<double>(bytes) / t_hier / 1e9;
  const double ratio = alg_hpc / alg_mpi;
  if (world.rank() == 0) {
    std::printf("%12lld %8zu | %10.1f %9.3f | %10.1f %9.3f %6.3f | %10.1f %9.3f %6.3f | %5s\n",
                static_cast<long long>(bytes), flat.bucket_count(), t_mpi * 1e6, alg_mpi * bus_factor, t_hpc * 1e6,
                alg_hpc * bus_factor, ratio, t_hier * 1e6, alg_hier * bus_factor, alg_hier / alg_mpi,
                ok ? "ok" : "FAIL");
    std::fflush(stdout);
  }
  return json::object{{"bytes", bytes},
                      {"buckets", static_cast<std::int64_t>(flat.bucket_count())},
                      {"mpi_us", t_mpi * 1e6},
                      {"mpi_busbw_gbs", alg_mpi * bus_factor},
                      {"hpctrain_us", t_hpc * 1e6},
                      {"hpctrain_busbw_gbs", alg_hpc * bus_factor},
                      {"ratio", ratio},
                      {"hierarchical_us", t_hier * 1e6},
                      {"hierarchical_busbw_gbs", alg_hier * bus_factor},
                      {"hierarchical_ratio", alg_hier / alg_mpi},
                      {"correct", ok}};
}

int bench_allreduce(const AllreduceArguments& o) {
  if (o.min_bytes > o.max_bytes) throw UsageError("bench allreduce: --min-bytes exceeds --max-bytes");
  use_default_threads();
  Communicator world = Communicator::world();
  const HierarchicalSum hier(world);
  if (world.rank() == 0) print_header(o, world.size(), hier);
  json::array rows;
  bool all_ok = true;
  for (std::int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) {
    bool ok = true;
    rows.push_back(measure_size(o, world, bytes, ok));
    all_ok = all_ok && ok;
  }
  if (world.rank() == 0) {
    write_json_file(o.json_path, json::object{{"benchmark", "allreduce"},
                                              {"ranks", world.size()},
                                              {"nodes", hier.nodes()},
                                              {"bucket_mb", o.bucket_mb},
                                              {"repeats", o.repeats},
                                              {"gap_ms", o.gap_ms},
                                              {"rows", rows}});
  }
  if (!all_ok) throw RuntimeFailure("bench allreduce: a reduction gave a wrong sum");
  return 0;
}

}  // namespace

void add_bench_allreduce(CLI::App& bench, Commands& commands) {
  auto o = std::make_shared<AllreduceArguments>();
  CLI::App* app = bench.add_subcommand("allreduce", "bucketed gradient reduction vs plain MPI_Allreduce");
  app->group("Benchmarks");
  app->footer(
      "For each message size (x4 steps), hpctrain's bucketed gradient path as training drives it\n"
      "(the overlapping reducer: buckets of --bucket-mb, each started on its communication thread\n"
      "when backward's hooks mark it full, then waited for), flat and with comm.hierarchical=on\n"
      "(in flight on equal nodes the 2-D ring: reduce-scatter in each node, each rank's chunk summed\n"
      "with its peers on the other nodes, all-gather in the node), next to one plain\n"
      "MPI_Allreduce of the same bytes, in the same run. Per size: median time per operation over\n"
      "R repeats (slowest rank), algorithm bandwidth = bytes / time, bus bandwidth =\n"
      "algbw * 2 (P - 1) / P (as nccl-tests), and their ratio. Every size is checked: each rank\n"
      "contributes (rank + 1) * (i mod 7) and the sums are compared.");
  app->add_option("--min-bytes", o->min_bytes, "smallest message")
      ->check(integer_at_least(4))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--max-bytes", o->max_bytes, "largest message")
      ->check(integer_at_least(4))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--bucket-mb", o->bucket_mb, "the reducer's bucket size in MiB")
      ->check(positive_number())
      ->type_name("MB")
      ->capture_default_str();
  app->add_option("--repeats", o->repeats, "repeats per size (the median is reported)")
      ->check(integer_at_least(1))
      ->type_name("R")
      ->capture_default_str();
  app->add_option("--gap-ms", o->gap_ms,
                  "ms of busy wait before each timed operation (a training step's compute: a link "
                  "that refills credit while idle is timed as training sees it)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("MS")
      ->capture_default_str();
  app->add_option("--json", o->json_path, "also write the figures as JSON")->type_name("FILE");
  commands.push_back({app, [o] { return bench_allreduce(*o); }});
}

}  // namespace hpctrain
