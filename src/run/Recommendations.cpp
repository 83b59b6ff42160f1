#include "run/Recommendations.hpp"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <string_view>

#include "util/Files.hpp"

namespace hpctrain {
namespace json = boost::json;
using namespace recommendation_thresholds;
namespace {

const json::value* find(const json::value& root, std::initializer_list<const char*> path) {
  const json::value* v = &root;
  for (const char* key : path) {
    const json::object* o = v->if_object();
    if (!o) return nullptr;
    auto it = o->find(key);
    if (it == o->end()) return nullptr;
    v = &it->value();
  }
  return v;
}

std::optional<double> as_number(const json::value* v) {
  if (!v) return std::nullopt;
  if (v->is_double()) return v->as_double();
  if (v->is_int64()) return static_cast<double>(v->as_int64());
  if (v->is_uint64()) return static_cast<double>(v->as_uint64());
  return std::nullopt;
}

std::optional<double> number(const json::value& root, std::initializer_list<const char*> path) {
  return as_number(find(root, path));
}

// The numbers of an array (a spread's per_rank, world's per-rank lists); non-numbers as 0.
std::vector<double> numbers(const json::value* v) {
  std::vector<double> out;
  if (!v || !v->is_array()) return out;
  for (const auto& x : v->as_array()) out.push_back(as_number(&x).value_or(0.0));
  return out;
}

bool flag(const json::value& root, std::initializer_list<const char*> path) {
  const json::value* v = find(root, path);
  return v && v->is_bool() && v->as_bool();
}

std::string format(const char* fmt, ...) {
  char text[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(text, sizeof(text), fmt, args);
  va_end(args);
  return text;
}

void add(json::array& out, const char* rule, const char* severity, double value, double threshold,
         const std::string& evidence, const std::string& suggestion) {
  out.push_back(json::object{{"rule", rule},
                             {"severity", severity},
                             {"evidence", evidence},
                             {"suggestion", suggestion},
                             {"value", value},
                             {"threshold", threshold}});
}

std::int64_t steps_of(const json::value& r) {
  return static_cast<std::int64_t>(number(r, {"training", "steps"}).value_or(0));
}

double phase_mean(const json::value& r, const char* phase) {
  return number(r, {"time_per_step_ms", phase, "mean"}).value_or(0.0);
}

// Data phase share of the step: the batch pipeline does not keep up.
void input_bound(const json::value& r, json::array& out) {
  const double total = number(r, {"time_per_step_ms", "total_mean"}).value_or(0.0);
  if (steps_of(r) < kMinSteps || total <= 0) return;
  const double data = phase_mean(r, "data");
  const double share = data / total;
  if (share <= kInputBoundShare) return;
  add(out, "input_bound", "warning", share, kInputBoundShare,
      format("the data phase takes %.2f of %.2f ms per step (%.0f%%, threshold %.0f%%)", data, total, 100 * share,
             100 * kInputBoundShare),
      "the step waits for its input batch: give the batch pipeline CPU (fewer ranks per node or fewer run.threads "
      "per rank), lighten augmentation (data.augment_crop_padding, data.augment_flip), or raise train.batch_size so "
      "the per-step costs (row exchange, logging) weigh less; a larger run.log_every logs less often");
}

// Gradient reduction the backward pass does not hide.
void communication_bound(const json::value& r, json::array& out) {
  const auto share = number(r, {"communication", "exposed_share_of_step"});
  const double ranks = number(r, {"world", "size"}).value_or(1);
  if (steps_of(r) < kMinSteps || !share || ranks < 2 || *share <= kCommBoundShare) return;
  const bool overlap = flag(r, {"communication", "overlap"});
  const double nodes = number(r, {"world", "nodes"}).value_or(1);
  const json::value* hier = find(r, {"communication", "hierarchical"});
  const double bucket_mb = number(r, {"model", "bucket_mb"}).value_or(25);
  const double buckets = number(r, {"model", "gradient_buckets"}).value_or(1);
  std::string suggestion;
  if (!overlap) {
    suggestion = "set comm.overlap=true to reduce buckets during backward";
  } else if (buckets <= 1) {
    suggestion = format(
        "all gradients fit one bucket of comm.bucket_mb=%g, which can only start after backward: lower comm.bucket_mb "
        "(e.g. %g) so reductions start earlier",
        bucket_mb, bucket_mb / 4);
  } else {
    suggestion = format(
        "with %g buckets of comm.bucket_mb=%g: try a larger bucket (fewer calls, %g) or a smaller one "
        "(earlier start, %g) and compare",
        buckets, bucket_mb, bucket_mb * 2, bucket_mb / 2);
  }
  if (nodes > 1 && (!hier || hier->is_null())) suggestion += "; across nodes, try comm.hierarchical=on";
  suggestion += "; a larger train.batch_size per rank spreads the same reduction over more samples";
  add(out, "communication_bound", "warning", *share, kCommBoundShare,
      format("%.0f%% of the step waits for gradient reduction (communication.exposed_share_of_step %.3f, threshold "
             "%.2f; overlap %s)",
             100 * *share, *share, kCommBoundShare, overlap ? "on" : "off"),
      suggestion);
}

// One rank computing slower than the others makes every rank wait at the reduction.
void straggler(const json::value& r, json::array& out) {
  if (steps_of(r) < kMinSteps) return;
  std::vector<double> compute;
  for (const char* phase : {"data", "forward", "backward", "optimizer"}) {
    const auto v = numbers(find(r, {"time_per_step_ms", phase, "per_rank"}));
    if (compute.empty()) compute.assign(v.size(), 0.0);
    if (v.size() != compute.size()) return;
    for (std::size_t i = 0; i < v.size(); ++i) compute[i] += v[i];
  }
  if (compute.size() < 2) return;
  std::vector<double> sorted = compute;
  std::sort(sorted.begin(), sorted.end());
  const std::size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  const auto slowest = static_cast<std::size_t>(std::max_element(compute.begin(), compute.end()) - compute.begin());
  const double ratio = median > 0 ? compute[slowest] / median : 1.0;
  if (ratio <= kStragglerRatio) return;
  const auto node = numbers(find(r, {"world", "node_of_rank"}));
  const auto load = numbers(find(r, {"system", "load_average_1min", "per_rank"}));
  std::string where = node.size() > slowest ? format(" on node %g", node[slowest]) : "";
  if (load.size() > slowest) where += format(" (1-minute load %.1f)", load[slowest]);
  add(out, "straggler_rank", "warning", ratio, kStragglerRatio,
      format("rank %zu computes %.2f ms per step (data, forward, backward, optimizer), the median rank %.2f ms "
             "(%.2fx, threshold %.2fx)",
             slowest, compute[slowest], median, ratio, kStragglerRatio),
      format("every rank waits for rank %zu at each reduction: look for other work%s, a different thread count "
             "(world.threads_per_rank) or a slower device there; pin ranks to cores (mpirun --bind-to core) or "
             "leave that node out",
             slowest, where.c_str()));
}

// Peak memory against the memory there is: near the limit, or room to spare.
void memory_headroom(const json::value& r, json::array& out) {
  const bool gpu = find(r, {"world", "device"}) && find(r, {"world", "device"})->is_string() &&
                   find(r, {"world", "device"})->as_string() == "cuda";
  const json::value* checkpointing = find(r, {"model", "checkpoint_every"});
  const bool recomputes = (checkpointing && as_number(checkpointing).value_or(0) > 0) ||
                          !numbers(find(r, {"model", "checkpoint_blocks"})).empty();
  double peak = 0, capacity = 0;
  std::string what;
  if (gpu) {
    peak = number(r, {"memory", "gpu_peak_allocated_bytes", "max"}).value_or(0);
    capacity = number(r, {"world", "gpu", "memory_bytes"}).value_or(0);
    what = "GPU memory (memory.gpu_peak_allocated_bytes.max / world.gpu.memory_bytes)";
  } else {
    // Ranks of a node share its memory: the sum of their peaks against the node's memory.
    const auto rss = numbers(find(r, {"memory", "peak_rss_bytes", "per_rank"}));
    const auto node = numbers(find(r, {"world", "node_of_rank"}));
    const auto mem = numbers(find(r, {"system", "memory_bytes", "per_rank"}));
    if (rss.empty() || node.size() != rss.size() || mem.size() != rss.size()) return;
    std::map<double, double> sum;
    std::map<double, double> node_memory;
    for (std::size_t i = 0; i < rss.size(); ++i) {
      sum[node[i]] += rss[i];
      node_memory[node[i]] = mem[i];
    }
    for (const auto& [n, bytes] : sum) {
      if (node_memory[n] > 0 && bytes / node_memory[n] >= (capacity > 0 ? peak / capacity : 0)) {
        peak = bytes;
        capacity = node_memory[n];
      }
    }
    what = "host memory (the node's ranks' memory.peak_rss_bytes summed / system.memory_bytes)";
  }
  if (peak <= 0 || capacity <= 0) return;
  const double share = peak / capacity;
  const std::string evidence = format("peak %.2f GiB of %.2f GiB %s: %.0f%%", peak / 1073741824.0,
                                      capacity / 1073741824.0, what.c_str(), 100 * share);
  if (share > kMemoryHighShare) {
    std::string suggestion =
        "close to the limit: lower train.batch_size or recompute activations in backward (model.checkpoint_every=1)";
    const json::value* shard = find(r, {"parallel", "shard", "stage"});
    if (number(r, {"world", "size"}).value_or(1) > 1 && shard && shard->is_string() && shard->as_string() == "none") {
      suggestion +=
          "; parallel.shard=optimizer (or gradients) keeps only a share of the optimizer state (and "
          "gradients) on each replica";
    }
    add(out, "memory_headroom", "warning", share, kMemoryHighShare,
        evidence + format(" (threshold %.0f%%)", 100 * kMemoryHighShare),
        suggestion + "; `hpctrain plan CONFIG key=value` estimates a setting's memory before running it");
  } else if (share < kMemoryLowShare && (gpu || recomputes)) {
    std::string suggestion =
        recomputes ? "gradient checkpointing is on and memory is plentiful: turn it off (model.checkpoint_every=0, "
                     "model.checkpoint_blocks=[]) to save its recomputation"
                   : format("room for a larger train.batch_size (about %.1fx fits under %.0f%%)",
                            kMemoryHighShare * 0.8 / share, 100 * kMemoryHighShare * 0.8);
    suggestion += "; `hpctrain plan CONFIG key=value` estimates a setting's memory before running it";
    add(out, "memory_headroom", "info", share, kMemoryLowShare,
        evidence + format(" (below %.0f%%)", 100 * kMemoryLowShare), suggestion);
  }
}

// More compute threads on a node than CPUs: the threads take turns.
void threads_per_core(const json::value& r, json::array& out) {
  const auto threads = numbers(find(r, {"world", "threads_per_rank"}));
  const auto node = numbers(find(r, {"world", "node_of_rank"}));
  const auto cpus = numbers(find(r, {"system", "cpus_online", "per_rank"}));
  if (threads.empty() || node.size() != threads.size() || cpus.size() != threads.size()) return;
  std::map<double, double> sum, node_cpus, ranks;
  for (std::size_t i = 0; i < threads.size(); ++i) {
    sum[node[i]] += threads[i];
    node_cpus[node[i]] = cpus[i];
    ranks[node[i]] += 1;
  }
  double worst = 0, worst_node = 0;
  for (const auto& [n, t] : sum) {
    if (node_cpus[n] > 0 && t / node_cpus[n] > worst) {
      worst = t / node_cpus[n];
      worst_node = n;
    }
  }
  if (worst <= kThreadsPerCpu) return;
  const double node_cpu_count = node_cpus[worst_node], on_node = ranks[worst_node];
  const double per_rank = std::max(1.0, std::floor(node_cpu_count / on_node));
  const double threads_now = sum[worst_node] / on_node;
  // Already one thread per rank: only fewer ranks help.
  const std::string suggestion =
      per_rank < threads_now
          ? format("set run.threads=%g (CPUs / ranks on the node) or start fewer ranks per node", per_rank)
          : format("start at most %g ranks per node (its CPUs / run.threads); more ranks take turns on the cores",
                   std::max(1.0, std::floor(node_cpu_count / std::max(1.0, threads_now))));
  add(out, "threads_per_core", "warning", worst, kThreadsPerCpu,
      format("node %g runs %g ranks with %g intra-op threads in all on %g CPUs (%.2f per CPU, threshold %.2f)",
             worst_node, on_node, sum[worst_node], node_cpu_count, worst, kThreadsPerCpu),
      suggestion);
}

// Checkpoints that cost a noticeable share of the run.
void checkpoint_cost(const json::value& r, json::array& out) {
  const double seconds = number(r, {"training", "checkpoint_seconds"}).value_or(0);
  const double total = number(r, {"training", "total_seconds"}).value_or(0);
  const double count = number(r, {"training", "checkpoints"}).value_or(0);
  if (seconds <= 0 || total <= 0 || count <= 0) return;
  const double share = seconds / total;
  if (share <= kCheckpointShare) return;
  add(out, "checkpoint_cost", "warning", share, kCheckpointShare,
      format("%g checkpoints took %.2f s of %.2f s (%.0f%%, threshold %.0f%%), %.2f s each", count, seconds, total,
             100 * share, 100 * kCheckpointShare, seconds / count),
      format("checkpoint less often: raise checkpoint.every_steps about %.0fx, or use checkpoint.every_minutes",
             std::ceil(share / (0.4 * kCheckpointShare))));
}

// GPUs that wait: only with the monitor's samples (system.monitor).
void low_gpu_utilization(const json::value& r, json::array& out) {
  const auto util = number(r, {"system", "monitor", "gpu_utilization", "mean"});
  if (!util || steps_of(r) < kMinSteps || *util >= kGpuUtilizationLow) return;
  const double total = number(r, {"time_per_step_ms", "total_mean"}).value_or(0);
  const double data_share = total > 0 ? phase_mean(r, "data") / total : 0;
  const double comm_share = number(r, {"communication", "exposed_share_of_step"}).value_or(0);
  add(out, "low_gpu_utilization", "warning", *util, kGpuUtilizationLow,
      format("mean GPU utilization %.0f%% (threshold %.0f%%); data phase %.0f%%, exposed communication %.0f%% of the "
             "step",
             100 * *util, 100 * kGpuUtilizationLow, 100 * data_share, 100 * comm_share),
      "give each GPU more work per launch: a larger train.batch_size, device.cuda_graphs=true for small models, "
      "precision.mode=bf16; if the data or communication share is high, follow those rules first");
}

// fp16 loss scaling that keeps overflowing and skipping steps.
void loss_scale_thrash(const json::value& r, json::array& out) {
  if (!flag(r, {"precision", "loss_scaling"})) return;
  const double skipped = number(r, {"precision", "skipped_steps"}).value_or(0);
  const auto steps = static_cast<double>(steps_of(r));
  if (steps <= 0) return;
  const double share = skipped / steps;
  if (share <= kLossScaleSkipShare) return;
  add(out, "loss_scale_thrash", "warning", share, kLossScaleSkipShare,
      format("fp16 skipped %g of %g steps for overflow (%.1f%%, threshold %.1f%%); final loss scale %g", skipped, steps,
             100 * share, 100 * kLossScaleSkipShare, number(r, {"precision", "final_loss_scale"}).value_or(0)),
      "the scale grows into overflow too often: raise precision.growth_interval or lower precision.growth_factor; "
      "precision.mode=bf16 needs no loss scaling where the hardware has it");
}

// The loss jumping early in the run: the learning rate arrives too fast.
void warmup_too_short(const json::value& r, json::array& out) {
  const auto rise = number(r, {"training", "early_loss", "max_rise"});
  if (!rise || *rise <= kEarlyLossRise) return;
  const double at = number(r, {"training", "early_loss", "at_step"}).value_or(0);
  const double window = number(r, {"training", "early_loss", "window_steps"}).value_or(0);
  const double warmup = number(r, {"training", "early_loss", "warmup_steps"}).value_or(0);
  if (warmup >= 2 * at && warmup > 0) return;  // the spike came well inside the warmup
  add(out, "warmup_too_short", "warning", *rise, kEarlyLossRise,
      format("the loss logged at step %g was %.2fx the lowest loss logged before it (threshold %.2fx), within the "
             "first %g steps; schedule.warmup_steps=%g",
             at, *rise, kEarlyLossRise, window, warmup),
      format("warm the learning rate up for longer (schedule.warmup_steps=%g) or lower optimizer.lr",
             std::max(2 * at, 2 * warmup)));
}

}  // namespace

json::array recommendations(const json::value& report) {
  json::array out;
  input_bound(report, out);
  communication_bound(report, out);
  straggler(report, out);
  memory_headroom(report, out);
  threads_per_core(report, out);
  checkpoint_cost(report, out);
  low_gpu_utilization(report, out);
  loss_scale_thrash(report, out);
  warmup_too_short(report, out);
  return out;
}

std::string recommendations_text(const json::array& recommendations) {
  if (recommendations.empty()) {
    return "recommendations: none, no rule fired on this run's figures (rules and thresholds: docs/outputs.md, "
           "\"Recommendations\")\n";
  }
  std::string text = "recommendations (report.json \"recommendations\"):\n";
  for (const auto& v : recommendations) {
    const json::object& o = v.as_object();
    text += "  [" + std::string(o.at("severity").as_string()) + "] " + std::string(o.at("rule").as_string()) + ": " +
            std::string(o.at("evidence").as_string()) + "\n    -> " + std::string(o.at("suggestion").as_string()) +
            "\n";
  }
  return text;
}

json::object early_loss_figure(const std::vector<StepLoss>& losses, std::int64_t total_steps,
                               std::int64_t warmup_steps) {
  const std::int64_t window = std::max<std::int64_t>(1, total_steps / 5);
  double lowest = std::numeric_limits<double>::infinity(), rise = 1.0;
  std::int64_t at = 0, lines = 0;
  for (const StepLoss& s : losses) {
    if (s.step > window) break;
    if (!std::isfinite(s.loss)) continue;
    ++lines;
    if (lowest > 0 && std::isfinite(lowest) && s.loss / lowest > rise) {
      rise = s.loss / lowest;
      at = s.step;
    }
    lowest = std::min(lowest, s.loss);
  }
  return json::object{
      {"window_steps", window}, {"lines", lines}, {"max_rise", rise}, {"at_step", at}, {"warmup_steps", warmup_steps}};
}

json::object early_loss_from_log(const std::string& metrics_path, std::int64_t total_steps, std::int64_t warmup_steps) {
  std::vector<StepLoss> losses;
  std::string text;
  try {
    text = read_file(metrics_path);
  } catch (const std::exception&) {
    text.clear();  // no log: the figure of no losses
  }
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    boost::system::error_code error;
    const json::value line = json::parse(std::string_view(text).substr(begin, end - begin), error);
    begin = end + 1;
    const json::object* o = error ? nullptr : line.if_object();
    if (!o || !o->contains("type") || o->at("type") != "step" || !o->contains("loss")) continue;
    const json::value& loss = o->at("loss");
    if (!loss.is_number() || !o->contains("step") || !o->at("step").is_number()) continue;
    losses.push_back({o->at("step").to_number<std::int64_t>(), loss.to_number<double>()});
  }
  return early_loss_figure(losses, total_steps, warmup_steps);
}

}  // namespace hpctrain
