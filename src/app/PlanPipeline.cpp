// `hpctrain plan` with parallel.pipeline_stages > 1. The split is the trainer's (make_stage_plan
// over measure_block_costs, or parallel.stage_split); the activations a stage holds at once come
// from its schedule's action list (peak_held, simulate), not a formula, times one microbatch's
// bytes on each of its chunks measured as the engine measures them (train/Pipeline.hpp
// PipelineMemory: the heap a forward leaves for its backward, plus the received input).
#include "app/PlanPipeline.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "config/Config.hpp"
#include "eval/Metrics.hpp"
#include "io/DatasetLayout.hpp"
#include "models/Model.hpp"
#include "train/Pipeline.hpp"
#include "train/PipelineSchedule.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

constexpr double kMiB = 1048576.0;

// Bytes one microbatch of `rows` samples leaves for backward on each virtual stage (the
// second of two rounds: the first allocates the gradients).
std::vector<double> measure_virtual_stage_bytes(ModelImpl& model, const StagePlan& plan,
                                                const std::vector<std::int64_t>& sample, std::int64_t rows,
                                                std::int64_t outputs) {
  model.train();
  std::vector<std::int64_t> shape{rows};
  shape.insert(shape.end(), sample.begin(), sample.end());
  torch::manual_seed(1);
  const auto input = torch::randn(shape);
  const auto labels = torch::randint(0, std::max<std::int64_t>(2, outputs), {rows});
  std::vector<double> bytes(static_cast<std::size_t>(plan.virtual_stages()), 0.0);
  for (int round = 0; round < 2; ++round) {
    torch::Tensor x = input;
    for (int k = 0; k < plan.virtual_stages(); ++k) {
      // A later stage's input is a received buffer it keeps for its gradient, as in the engine.
      torch::Tensor in = k == 0 ? x : x.clone().requires_grad_(true);
      const std::int64_t before = heap_in_use();
      torch::Tensor out = in;
      for (auto piece = plan.piece_begin(k); piece < plan.piece_end(k); ++piece) out = model.run_piece(piece, out);
      torch::Tensor loss;
      if (k + 1 == plan.virtual_stages()) {
        const auto logits = out.to(torch::kFloat);
        loss = outputs > 1 ? torch::nn::functional::cross_entropy(logits, labels) : logits.pow(2).mean();
      }
      bytes[static_cast<std::size_t>(k)] = static_cast<double>(std::max<std::int64_t>(0, heap_in_use() - before)) +
                                           (k > 0 ? static_cast<double>(in.nbytes()) : 0.0);
      x = out.detach();
      (loss.defined() ? loss : out.sum()).backward();
    }
  }
  for (auto& p : model.parameters()) p.mutable_grad().reset();
  return bytes;
}

std::string pieces_of_rank(const StagePlan& plan, int stage) {
  std::string out;
  for (int c = 0; c < plan.shape.chunks; ++c) {
    const int k = c * plan.shape.stages + stage;
    const auto first = plan.first_block[static_cast<std::size_t>(k)];
    const auto last = std::min(plan.piece_end(k) - 2, plan.blocks - 1);
    out += (c ? ", " : "") + std::string(k == 0 ? "stem+" : "") + std::to_string(first) + "-" + std::to_string(last) +
           (k + 1 == plan.virtual_stages() ? "+head" : "");
  }
  return out;
}

struct StageMemory {
  std::int64_t parameters = 0;
  double microbatch = 0;  // activations of one microbatch through all of the rank's chunks
  int in_flight = 0;      // (microbatch, chunk) pairs held at the peak
  double activations = 0;
};

void print_row(const std::string& name, const std::string& pieces, std::int64_t parameters, double states,
               const std::string& microbatch, const std::string& in_flight, double activations) {
  const double bytes = static_cast<double>(parameters) * 4.0;
  std::printf("%-6s %-20s %12lld %10.2f %10.2f %10.2f %10s %9s %12.2f %10.2f\n", name.c_str(), pieces.c_str(),
              static_cast<long long>(parameters), bytes / kMiB, bytes / kMiB, states * bytes / kMiB, microbatch.c_str(),
              in_flight.c_str(), activations / kMiB, (bytes * (2.0 + states) + activations) / kMiB);
}

std::string mib_text(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f", bytes / kMiB);
  return text;
}

}  // namespace

void print_pipeline_plan(const Config& c, const DatasetMeta& meta, std::int64_t ranks, double budget_gib,
                         const WholeModelMemory& whole) {
  const ParallelConfig& pc = c.parallel;
  const ScheduleKind kind = parse_schedule_kind(pc.schedule);
  const PipelineShape shape{static_cast<int>(pc.pipeline_stages), static_cast<int>(pc.microbatches),
                            kind == ScheduleKind::Interleaved ? static_cast<int>(pc.chunks) : 1};
  check_pipeline_shape(kind, shape);
  const int p = shape.stages, m = shape.microbatches;
  if (ranks % p != 0) {
    throw ConfigError("parallel.pipeline_stages: " + std::to_string(p) + " stages do not divide " +
                      std::to_string(ranks) + " ranks");
  }
  const std::int64_t replicas = ranks / p, batch = c.train.batch_size;
  if (batch % replicas != 0 || (batch / replicas) % m != 0) {
    throw ConfigError("parallel.microbatches: " + std::to_string(m) + " microbatches do not divide the per-replica " +
                      "batch (train.batch_size " + std::to_string(batch) + " over " + std::to_string(replicas) +
                      " replicas)");
  }
  const std::int64_t rows = batch / replicas / m;
  const std::int64_t outputs = resolve_loss(c.train, meta.num_classes > 0).model_outputs(meta);
  torch::manual_seed(1);
  auto model = build_model(c.model, InputSpec{meta.sample_shape, outputs});
  const std::int64_t blocks = model->pipeline_blocks();
  if (blocks < static_cast<std::int64_t>(p) * shape.chunks) {
    throw ConfigError("parallel.pipeline_stages: model.name=" + c.model.name + " has " + std::to_string(blocks) +
                      " blocks, fewer than the " + std::to_string(p * shape.chunks) + " (virtual) stages");
  }
  std::vector<double> costs;
  if (pc.stage_split.empty()) costs = measure_block_costs(*model, meta.sample_shape, rows, torch::kCPU, "fp32");
  const StagePlan plan = make_stage_plan(kind, shape, blocks, pc.stage_split, costs);
  const auto piece_params = piece_parameter_counts(*model);
  const auto chunk_bytes = measure_virtual_stage_bytes(*model, plan, meta.sample_shape, rows, outputs);
  const Simulation sim = simulate(pipeline_table(kind, shape), shape);

  std::printf("\npipeline: %d stages x %lld replica(s), schedule %s", p, static_cast<long long>(replicas),
              schedule_kind_name(kind).c_str());
  if (shape.chunks > 1) std::printf(" with %d chunks per stage", shape.chunks);
  std::printf(", %d microbatches of %lld samples (per-replica batch %lld)\n", m, static_cast<long long>(rows),
              static_cast<long long>(batch / replicas));
  if (costs.empty()) {
    std::printf("split (parallel.stage_split): %s\n", plan.describe().c_str());
  } else {
    std::printf("split (balanced on forward+backward ms per block, one microbatch, measured here:");
    for (double t : costs) std::printf(" %.3f", 1000.0 * t);
    std::printf("): %s\n", plan.describe().c_str());
  }
  std::printf("predicted bubble %s = %.3f\n\n", shape.chunks > 1 ? "(p-1)/(v*m+p-1)" : "(p-1)/(m+p-1)",
              theoretical_bubble(kind, shape));
  std::printf("%-6s %-20s %12s %10s %10s %10s %10s %9s %12s %10s\n", "stage", "blocks", "parameters", "param MiB",
              "grad MiB", "optim MiB", "act/mb MiB", "in flight", "act MiB", "total MiB");
  std::vector<StageMemory> stages(static_cast<std::size_t>(p));
  for (int s = 0; s < p; ++s) {
    StageMemory& st = stages[static_cast<std::size_t>(s)];
    std::vector<double> weights;
    for (int ch = 0; ch < shape.chunks; ++ch) {
      const int k = virtual_stage(shape, s, ch);
      for (auto piece = plan.piece_begin(k); piece < plan.piece_end(k); ++piece)
        st.parameters += piece_params[static_cast<std::size_t>(piece)];
      weights.push_back(chunk_bytes[static_cast<std::size_t>(k)]);
      st.microbatch += weights.back();
    }
    st.in_flight = sim.peak_in_flight[static_cast<std::size_t>(s)];
    st.activations = peak_held(pipeline_actions(kind, shape, s), weights);
    print_row(std::to_string(s), pieces_of_rank(plan, s), st.parameters, whole.optimizer_states,
              mib_text(st.microbatch), std::to_string(st.in_flight), st.activations);
  }
  print_row("whole", "one rank, no pipe", whole.parameters, whole.optimizer_states, "-", "-", whole.activations);
  std::printf(
      "\nin flight: (microbatch, chunk) pairs whose activations a stage holds at its peak under %s, from its action\n"
      "list; act MiB = that peak in bytes (one microbatch's activations measured per chunk, fp32, CPU). The whole\n"
      "model's activations are its per-replica batch of %lld in one pass.\n",
      schedule_kind_name(kind).c_str(), static_cast<long long>(batch / replicas));
  auto total = [&](std::int64_t parameters, double activations) {
    return static_cast<double>(parameters) * 4.0 * (2.0 + whole.optimizer_states) + activations;
  };
  if (budget_gib <= 0) {
    std::printf("no --budget: compare each stage's total with one rank's memory (or pass --budget GiB)\n");
    return;
  }
  const double budget = budget_gib * 1024.0 * kMiB;
  std::printf("budget %.2f GiB per rank, with the %.1f MiB a rank holds before any model:", budget_gib,
              whole.baseline / kMiB);
  for (int s = 0; s < p; ++s) {
    const double t = whole.baseline + total(stages[static_cast<std::size_t>(s)].parameters,
                                            stages[static_cast<std::size_t>(s)].activations);
    std::printf(" stage %d %s (%.1f MiB);", s, t <= budget ? "fits" : "EXCEEDS", t / kMiB);
  }
  const double t = whole.baseline + total(whole.parameters, whole.activations);
  std::printf(" the whole model on one rank %s (%.1f MiB)\n", t <= budget ? "fits" : "EXCEEDS", t / kMiB);
}

}  // namespace hpctrain
