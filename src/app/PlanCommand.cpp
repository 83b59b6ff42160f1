// `[mpirun -np N] hpctrain plan CONFIG [key=value ...] [--budget GiB] [--ranks N]`: the
// per-rank memory of training CONFIG, activations measured on probe steps.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <tuple>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "app/PlanPipeline.hpp"
#include "app/PlanScaling.hpp"
#include "comm/Communicator.hpp"
#include "config/Schema.hpp"
#include "eval/Metrics.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "launch/ProcessLayout.hpp"
#include "models/Model.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

namespace {

struct PlanArguments {
  std::string config;
  std::vector<std::string> overrides;
  double budget_gib = 0;
  double baseline_mib = -1;  // --baseline; < 0: measured
  std::int64_t ranks = 0;    // 0: the launch's
  ScalingArguments scaling;  // --nodes: the performance model instead of the memory plan
};

// Activation bytes as a line in the per-rank batch: fixed + per_sample * batch.
struct Line {
  double per_sample, fixed;
  double at(std::int64_t batch) const { return fixed + per_sample * static_cast<double>(batch); }
};

struct Plan {
  std::int64_t parameters = 0, batch = 0;
  double fixed = 0;  // parameters, gradient buckets, optimizer state
  double optimizer_states = 0;
  std::int64_t window = 0;  // parameters of the two largest pieces (parallel.shard=parameters)
  double baseline = 0;      // anonymous bytes this process held before any model (libraries' data, MPI)
  Line plain{}, checkpointed{};
};

// One process measures on the CPU: the model at per-rank batches 2 and 4, without and with
// checkpointing of every block, extrapolated linearly.
Plan measure(const Config& c, const DatasetMeta& meta, std::int64_t ranks) {
  // As the trainer builds it (eval/Metrics: LossSpec::model_outputs).
  const std::int64_t outputs = resolve_loss(c.train, meta.num_classes > 0).model_outputs(meta);
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
    auto pieces = piece_parameter_counts(*model);
    std::sort(pieces.rbegin(), pieces.rend());
    const std::int64_t window = pieces[0] + (pieces.size() > 1 ? pieces[1] : 0);
    return std::make_tuple(bytes, parameter_count(*model), window);
  };
  auto fit = [&](std::int64_t every) {
    const auto a = std::get<0>(probe(every, 2)), b = std::get<0>(probe(every, 4));
    const double per = std::max(0.0, (b - a) / 2.0);
    return Line{per, std::max(0.0, a - 2.0 * per)};
  };
  Plan plan;
  plan.baseline = static_cast<double>(anonymous_rss_bytes());
  plan.batch = (c.train.batch_size + ranks - 1) / ranks;
  std::tie(std::ignore, plan.parameters, plan.window) = probe(0, 1);
  plan.optimizer_states = c.optimizer.name == "sgd" ? (c.optimizer.momentum > 0 ? 1.0 : 0.0) : 2.0;
  plan.fixed = static_cast<double>(plan.parameters) * 4.0 * (2.0 + plan.optimizer_states);
  plan.plain = fit(0);
  plan.checkpointed = fit(1);
  return plan;
}

void print_plan(const PlanArguments& a, const Config& c, const DatasetMeta& meta, std::int64_t ranks, const Plan& p) {
  const double mib = 1048576.0, p_bytes = static_cast<double>(p.parameters) * 4.0;
  std::printf("plan: %s, model %s, %lld parameters, %lld rank(s), per-rank batch %lld, sample shape [",
              a.config.c_str(), c.model.name.c_str(), static_cast<long long>(p.parameters),
              static_cast<long long>(ranks), static_cast<long long>(p.batch));
  for (std::size_t i = 0; i < meta.sample_shape.size(); ++i) {
    std::printf("%s%lld", i ? ", " : "", static_cast<long long>(meta.sample_shape[i]));
  }
  std::printf("]\n\n%-40s %12s\n", "per rank", "MiB");
  std::printf("%-40s %12.1f\n", "parameters (fp32)", p_bytes / mib);
  std::printf("%-40s %12.1f\n", "gradients (fp32 buckets)", p_bytes / mib);
  std::printf("%-40s %12.1f\n", ("optimizer state (" + c.optimizer.name + ")").c_str(),
              p_bytes * p.optimizer_states / mib);
  std::printf("%-40s %12.1f\n", "activations, no checkpointing", p.plain.at(p.batch) / mib);
  std::printf("%-40s %12.1f\n", "activations, checkpointing every block", p.checkpointed.at(p.batch) / mib);
  std::printf("%-40s %12.1f\n", "total, no checkpointing", (p.fixed + p.plain.at(p.batch)) / mib);
  std::printf("%-40s %12.1f\n", "total, checkpointing every block", (p.fixed + p.checkpointed.at(p.batch)) / mib);
  std::printf("\nactivations per sample: %.2f MiB without, %.2f MiB with checkpointing (probe batches 2 and 4)\n",
              p.plain.per_sample / mib, p.checkpointed.per_sample / mib);
  if (a.budget_gib <= 0) return;
  const double budget = a.budget_gib * 1024.0 * mib;
  auto largest = [&](const Line& l) {
    const double room = budget - p.fixed - l.fixed;
    if (room <= 0) return std::int64_t{0};
    return l.per_sample > 0 ? static_cast<std::int64_t>(room / l.per_sample) : std::int64_t{1} << 40;
  };
  std::printf("budget %.2f GiB per rank: largest per-rank batch %lld without, %lld with checkpointing\n", a.budget_gib,
              static_cast<long long>(largest(p.plain)), static_cast<long long>(largest(p.checkpointed)));
}

// parallel.shard: what each rank holds between steps for each sharding stage over the
// replicas (docs/parallelism.md), and with --budget the most parameters that fit beside the
// activations at this batch (activations held fixed: they grow with the model, so an upper bound).
void print_shard_plan(const PlanArguments& a, const Config& c, std::int64_t ranks, const Plan& p) {
  const double mib = 1048576.0;
  const auto replicas = static_cast<double>(std::max<std::int64_t>(1, ranks / c.parallel.pipeline_stages));
  const double bucket = c.comm.bucket_mb * mib, activations = p.plain.at(p.batch);
  std::printf(
      "\nsharded data parallelism over %.0f replica(s) (parallel.shard; with pipeline stages, of each stage's "
      "share), per rank, MiB:\n%-12s %12s %12s %12s %12s %14s\n",
      replicas, "shard", "parameters", "gradients", "optimizer", "total", "bytes/param");
  struct Row {
    const char* name;
    double parameters, gradients, optimizer;  // per parameter, bytes
    double transient;  // gradient buckets alive during backward, gathered parameters during a step
  };
  const double k = p.optimizer_states, n = static_cast<double>(p.parameters);
  const double window = 4.0 * static_cast<double>(p.window);
  const Row rows[] = {{"none", 4.0, 4.0, 4.0 * k, 0.0},
                      {"optimizer", 4.0, 4.0 + 4.0 / replicas, 4.0 * k / replicas, 0.0},
                      {"gradients", 4.0, 4.0 / replicas, 4.0 * k / replicas, 2.0 * bucket},
                      {"parameters", 4.0 / replicas, 4.0 / replicas, 4.0 * k / replicas, 2.0 * bucket + window}};
  for (const Row& r : rows) {
    const double per_param = r.parameters + r.gradients + r.optimizer;
    std::printf("%-12s %12.3f %12.3f %12.3f %12.3f %14.2f%s\n", r.name, n * r.parameters / mib, n * r.gradients / mib,
                n * r.optimizer / mib, (n * per_param + r.transient) / mib, per_param,
                r.transient == 0 ? ""
                : r.transient > 2.0 * bucket
                    ? " (+ ~2 buckets during backward, + the 2 largest blocks' parameters gathered)"
                    : " (+ ~2 buckets of comm.bucket_mb during backward)");
    if (a.budget_gib > 0) {
      const double budget = a.budget_gib * 1024.0 * mib, need = n * per_param + r.transient + activations + p.baseline;
      const double room = budget - activations - r.transient - p.baseline;
      std::printf(
          "%-12s   %s: %.1f MiB with the activations and the %.1f MiB of memory a rank holds before any model; "
          "largest model that fits: %.0f parameters\n",
          "", need <= budget ? "fits" : "EXCEEDS", need / mib, p.baseline / mib, room > 0 ? room / per_param : 0.0);
    }
  }
}

void plan_on_this_rank(const PlanArguments& a, std::int64_t ranks) {
  const ResolvedConfig rc = load_config(a.config, a.overrides);
  if (!a.scaling.nodes.empty()) {
    ScalingArguments s = a.scaling;
    if (s.profiles.empty()) throw UsageError("plan --nodes: needs --profile REPORT (report.json of a measured run)");
    s.bucket_mb = rc.config.comm.bucket_mb;
    s.hierarchical = rc.config.comm.hierarchical;  // auto: on across nodes of several ranks, as training
    print_scaling_plan(s);
    return;
  }
  DatasetMeta meta;
  {
    H5File file = H5File::open_read_serial(rc.config.data.path);
    meta = read_dataset_meta(file);
  }
  torch::set_num_threads(std::max(1, ProcessLayout::discover(MPI_COMM_SELF).default_threads()));
  Plan plan = measure(rc.config, meta, ranks);
  if (a.baseline_mib >= 0) plan.baseline = a.baseline_mib * 1048576.0;
  print_plan(a, rc.config, meta, ranks, plan);
  print_shard_plan(a, rc.config, ranks, plan);
  const ParallelConfig& pc = rc.config.parallel;
  if (pc.pipeline_stages <= 1) return;
  const std::int64_t replicas = std::max<std::int64_t>(1, ranks / pc.pipeline_stages);
  const WholeModelMemory whole{plan.parameters, plan.optimizer_states,
                               plan.plain.at(rc.config.train.batch_size / replicas), plan.baseline};
  print_pipeline_plan(rc.config, meta, ranks, a.budget_gib, whole);
}

int run_plan(const PlanArguments& a) {
  // One process measures; the others wait for it, and every rank exits with its error's code.
  Communicator world = Communicator::world();
  const std::int64_t ranks = a.ranks > 0 ? a.ranks : world.size();
  collective_check(world, [&] {
    if (world.rank() == 0) plan_on_this_rank(a, ranks);
  });
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<PlanArguments>();
  CLI::App* app =
      parent.add_subcommand("plan", "per-rank memory: parameters, gradients, optimizer, activations (checkpointing)");
  app->footer(
      "Per-rank memory of training CONFIG: parameters, gradients, optimizer state, and the\n"
      "activations at the per-rank batch (train.batch_size / ranks), without and with gradient\n"
      "checkpointing of every block. Activations are measured on probe steps of the model at\n"
      "per-rank batches of 2 and 4 (one process, CPU, random inputs of the data set's sample\n"
      "shape) and extrapolated linearly. With --budget, the largest per-rank batch whose total\n"
      "fits, with and without checkpointing. Run under mpirun -np N for N ranks.\n"
      "With parallel.pipeline_stages > 1, also the trainer's stage split and per stage: parameters,\n"
      "gradients, optimizer state, one microbatch's activations, the microbatches the schedule\n"
      "holds at once (from its action list) and their bytes, the total, the predicted bubble; with\n"
      "--budget, whether each stage and the whole model fit. Every --budget verdict counts the\n"
      "memory a rank holds before any model (--baseline).");
  app->add_option("CONFIG", a->config, "the run's config file (JSON)")->required()->type_name("FILE.json");
  app->add_option("OVERRIDES", a->overrides, "key.path=value: config keys set over the file's")->type_name("KEY=VALUE");
  app->add_option("--budget", a->budget_gib, "memory per rank: also print the largest batch that fits")
      ->check(positive_number())
      ->type_name("GiB");
  app->add_option("--baseline", a->baseline_mib,
                  "memory a rank holds before any model, counted in every --budget verdict (default: this "
                  "process's resident anonymous memory before it builds one)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("MiB");
  app->add_option("--ranks", a->ranks, "plan for N ranks (default: the launch's)")
      ->check(integer_at_least(1))
      ->type_name("N");
  ScalingArguments& m = a->scaling;
  app->add_option("--nodes", m.nodes, "performance model: predict these node counts (1,2,4,...)")
      ->delimiter(',')
      ->check(integer_at_least(1))
      ->type_name("N,...");
  app->add_option("--ranks-per-node", m.ranks_per_node, "performance model: ranks per node")
      ->check(integer_at_least(1))
      ->type_name("R");
  app->add_option("--profile", m.profiles,
                  "performance model: report.json of measured runs of CONFIG, one per ranks-per-node count "
                  "(the matching one is used)")
      ->delimiter(',')
      ->type_name("REPORT,...");
  app->add_flag("--weak", m.weak, "performance model: weak scaling (the profile's per-rank batch on every count)");
  app->add_option("--link-gbps", m.link_gbps, "performance model: bandwidth between nodes (default 10)")
      ->check(positive_number())
      ->type_name("Gbit/s");
  app->add_option("--link-latency-us", m.link_latency_us, "performance model: latency between nodes (default 20)")
      ->check(positive_number())
      ->type_name("us");
  app->add_option("--node-gbps", m.node_gbps, "performance model: bandwidth within a node (default 80)")
      ->check(positive_number())
      ->type_name("Gbit/s");
  app->add_option("--node-latency-us", m.node_latency_us, "performance model: latency within a node (default 2)")
      ->check(positive_number())
      ->type_name("us");
  app->add_option("--inter", m.inter_json, "performance model: fit the links between nodes to bench allreduce --json")
      ->type_name("FILE");
  app->add_option("--intra", m.intra_json, "performance model: fit the links within a node to bench allreduce --json")
      ->type_name("FILE");
  app->add_option("--json", m.json_path, "performance model: also write the predictions as JSON")->type_name("FILE");
  commands.push_back({app, [a] { return run_plan(*a); }, true});
}

}  // namespace hpctrain
