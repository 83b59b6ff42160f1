#include "run/RunReport.hpp"

#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "comm/NcclCommunicator.hpp"
#include "config/MetricCatalog.hpp"
#include "eval/Scores.hpp"
#include "io/Hdf5.hpp"
#include "launch/Mpi.hpp"
#include "run/Recommendations.hpp"
#include "train/Device.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// Per-rank values of one figure: min, mean, max, imbalance (max/mean) and the list.
json::object spread(const std::vector<double>& v) {
  if (v.empty()) return {};
  const double mn = *std::min_element(v.begin(), v.end());
  const double mx = *std::max_element(v.begin(), v.end());
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  json::array ranks;
  for (double x : v) ranks.push_back(x);
  return json::object{
      {"min", mn}, {"mean", mean}, {"max", mx}, {"imbalance", mean > 0 ? mx / mean : 1.0}, {"per_rank", ranks}};
}

json::array to_array(const std::vector<double>& v) {
  return json::array(v.begin(), v.end());
}

json::array to_int_array(const std::vector<double>& v) {
  json::array a;
  for (double x : v) a.push_back(static_cast<std::int64_t>(x));
  return a;
}

// The figures each rank adds to the report, after its time per phase: one row per rank,
// gathered to rank 0 in one call.
enum class Figure : std::size_t {
  TrainSeconds,
  SamplesPerS,
  PeakRss,
  Threads,
  ReadSeconds,
  VerifySeconds,
  BytesRead,
  Load,
  Node,
  CommSeconds,
  CommBytes,
  LocalRank,
  LauncherRank,
  LauncherLocalRank,
  GpuAllocated,
  GpuReserved,
  GpuPeak,
  GpuIndex,
  Stage,            // pipeline stage of the rank
  PipeForward,      // pipeline seconds: forward pieces,
  PipeBackward,     // backward pieces,
  PipeWait,         // waiting for activations, gradients and sends,
  PipeSteps,        // whole forward-backward passes of the steps
  PipeWindow,       // the pipeline's common windows over the settled steps,
  PipeWindowBusy,   // this rank's forward + backward over the same steps,
  PipeSkew,         // the ranks' entry skew over them,
  PipeWindowSteps,  // and how many steps were settled
  PipeHeldPeak,     // pipeline activations: most bytes held for backward,
  PipeHeldMicro,    // one (microbatch, chunk)'s bytes (the last step's largest),
  PipeInFlight,     // most (microbatch, chunk) pairs held
  ParamBytes,       // training memory (parallel.shard): parameters,
  GradBytes,        // gradient buffers held between steps,
  OptBytes,         // optimizer state,
  BucketPeak,       // full gradient buckets alive at once (shard=gradients)
  WindowPeak,       // gathered parameters alive at once (shard=parameters)
  CpusOnline,       // the node's online CPUs, as this rank sees them
  MemoryTotal,      // the node's physical memory
  MonSamples,       // system monitor (run.monitor_seconds): samples taken,
  MonCpu,           // mean CPU utilization,
  MonRss,           // largest resident memory sampled,
  MonGpuUtil,       // mean GPU utilization (-1: none),
  MonGpuMemory,     // largest GPU memory in use (-1: none),
  MonGpuPower,      // mean GPU power (-1: none),
  MonMain,          // the main thread's seconds for the monitor,
  MonSampler,       // the sampling thread's seconds
  Count
};
constexpr std::size_t kPhases = static_cast<std::size_t>(Phase::Count);
constexpr std::size_t kWidth = kPhases + static_cast<std::size_t>(Figure::Count);

std::vector<double> rank_row(const Config& config, const RunContext& ctx, const ShardedDataset& data,
                             const TrainResult& r, const Communicator& comm, const DeviceInfo& device) {
  std::vector<double> row(kWidth, 0.0);
  for (std::size_t i = 0; i < kPhases; ++i) row[i] = r.timer.all()[i];
  auto set = [&](Figure f, double v) { row[kPhases + static_cast<std::size_t>(f)] = v; };
  const double local_samples =
      static_cast<double>(r.steps * batch_slice(config.train.batch_size, comm.size(), comm.rank()).size());
  set(Figure::TrainSeconds, r.train_seconds);
  set(Figure::SamplesPerS, local_samples / std::max(r.train_seconds, 1e-9));
  set(Figure::PeakRss, static_cast<double>(peak_rss_bytes()));
  set(Figure::Threads, static_cast<double>(ctx.threads));
  set(Figure::ReadSeconds, data.load_stats().read_seconds);
  set(Figure::VerifySeconds, data.load_stats().verify_seconds);
  set(Figure::BytesRead, static_cast<double>(data.load_stats().bytes_read));
  set(Figure::Load, load_average_1min());
  set(Figure::Node, static_cast<double>(ctx.layout.node_index));
  set(Figure::CommSeconds, r.comm.total_seconds);
  set(Figure::CommBytes, static_cast<double>(r.comm.bytes));
  set(Figure::LocalRank, static_cast<double>(ctx.layout.local_rank));
  set(Figure::LauncherRank, static_cast<double>(ctx.launch.launcher_rank()));
  set(Figure::LauncherLocalRank, static_cast<double>(ctx.launch.launcher_local_rank()));
  const DeviceMemory gpu_memory = device_memory(device.device);
  set(Figure::GpuAllocated, static_cast<double>(gpu_memory.allocated));
  set(Figure::GpuReserved, static_cast<double>(gpu_memory.reserved));
  set(Figure::GpuPeak, static_cast<double>(gpu_memory.peak));
  set(Figure::GpuIndex, static_cast<double>(device.device.is_cuda() ? device.device.index() : -1));
  set(Figure::Stage, static_cast<double>(r.stage));
  set(Figure::PipeForward, r.pipeline_forward);
  set(Figure::PipeBackward, r.pipeline_backward);
  set(Figure::PipeWait, r.pipeline_wait);
  set(Figure::PipeSteps, r.pipeline_steps);
  set(Figure::PipeWindow, r.pipeline_window);
  set(Figure::PipeWindowBusy, r.pipeline_window_busy);
  set(Figure::PipeSkew, r.pipeline_skew);
  set(Figure::PipeWindowSteps, static_cast<double>(r.pipeline_window_steps));
  set(Figure::PipeHeldPeak, static_cast<double>(r.activation_peak_bytes));
  set(Figure::PipeHeldMicro, static_cast<double>(r.microbatch_activation_bytes));
  set(Figure::PipeInFlight, static_cast<double>(r.in_flight_peak));
  set(Figure::ParamBytes, static_cast<double>(r.parameter_bytes));
  set(Figure::GradBytes, static_cast<double>(r.gradient_bytes));
  set(Figure::OptBytes, static_cast<double>(r.optimizer_state_bytes));
  set(Figure::BucketPeak, static_cast<double>(r.gradient_bucket_peak_bytes));
  set(Figure::WindowPeak, static_cast<double>(r.parameter_window_peak_bytes));
  set(Figure::CpusOnline, static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN)));
  set(Figure::MemoryTotal,
      static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
  const MonitorSummary& m = ctx.monitor;
  set(Figure::MonSamples, static_cast<double>(m.samples));
  set(Figure::MonCpu, m.cpu_utilization_mean);
  set(Figure::MonRss, m.rss_bytes_max);
  set(Figure::MonGpuUtil, m.gpu_utilization_mean);
  set(Figure::MonGpuMemory, m.gpu_memory_bytes_max);
  set(Figure::MonGpuPower, m.gpu_power_w_mean);
  set(Figure::MonMain, m.main_seconds);
  set(Figure::MonSampler, m.sampler_seconds);
  return row;
}

// Rank 0's view of the gathered rows.
struct Gathered {
  std::vector<double> all;
  int ranks = 0;
  std::vector<double> column(std::size_t c) const {
    std::vector<double> v;
    for (int rank = 0; rank < ranks; ++rank) v.push_back(all[static_cast<std::size_t>(rank) * kWidth + c]);
    return v;
  }
  std::vector<double> operator[](Figure f) const { return column(kPhases + static_cast<std::size_t>(f)); }
};

struct StepTimes {
  json::object per_step_ms, totals;
  double exposed_share = 0;
};

StepTimes step_times(const Gathered& g, std::int64_t step_count) {
  StepTimes out;
  const double steps = static_cast<double>(std::max<std::int64_t>(1, step_count));
  double step_total = 0;
  for (std::size_t i = 0; i < kPhases; ++i) {
    const auto phase = static_cast<Phase>(i);
    auto v = g.column(i);
    out.totals[phase_name(phase)] = spread(v);
    if (phase == Phase::Eval) continue;
    for (auto& x : v) x = 1000.0 * x / steps;
    step_total += std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    out.per_step_ms[phase_name(phase)] = spread(v);
  }
  out.per_step_ms["total_mean"] = step_total;
  // Duration of the reductions themselves, overlapped with backward or not.
  auto v = g[Figure::CommSeconds];
  out.totals["comm_total"] = spread(v);
  for (auto& x : v) x = 1000.0 * x / steps;
  out.per_step_ms["comm_total"] = spread(v);
  out.exposed_share =
      step_total > 0 ? out.per_step_ms["comm_exposed"].as_object()["mean"].as_double() / step_total : 0.0;
  return out;
}

json::object final_metrics(const TrainResult& r, const ShardedDataset& data) {
  json::object out;
  if (!r.epochs.empty()) {
    const auto& last = r.epochs.back();
    out["train_loss"] = last.train_loss;
    if (last.classification) out["train_accuracy"] = last.train_accuracy;
    if (last.has_validation) {
      out["val_loss"] = last.val_loss;
      if (last.classification) out["val_accuracy"] = last.val_accuracy;
    }
  }
  if (r.has_test && !data.classification()) {
    out["test_loss"] = r.test.loss;
    out["test_mse"] = r.test.mse;
    out["test_rmse"] = std::sqrt(r.test.mse);
    out["test_mae"] = r.test.mae;
    out["test_r2"] = std::isfinite(r.test.r2) ? json::value(r.test.r2) : json::value(nullptr);
    out["test_pearson"] = std::isfinite(r.test.pearson) ? json::value(r.test.pearson) : json::value(nullptr);
    add_forecast_figures(out, r.test, "test_");
    out["test_samples"] = r.test.count;
  }
  if (r.has_test && data.classification()) {
    out["test_loss"] = r.test.loss;
    out["test_accuracy"] = r.test.accuracy;
    out["test_samples"] = r.test.count;
    json::array confusion;
    for (std::int64_t i = 0; i < r.test.num_classes; ++i) {
      json::array row;
      for (std::int64_t j = 0; j < r.test.num_classes; ++j) row.push_back(r.test.confusion[i * r.test.num_classes + j]);
      confusion.push_back(row);
    }
    out["test_confusion"] = confusion;
    // The scores of a cross-validation fold (eval/Scores), from the confusion matrix.
    const json::object scores = to_json(classification_scores(r.test.confusion, r.test.num_classes));
    for (const char* name : {"balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                             "recall_weighted", "f1_weighted"}) {
      out[std::string("test_") + name] = scores.at(name);
    }
    out["test_per_class"] = scores.at("per_class");
  }
  return out;
}

json::object world_section(const RunContext& ctx, const Gathered& g, const DeviceInfo& device) {
  json::object launch_vars;
  for (const auto& kv : ctx.launch.variables) launch_vars[kv.first] = kv.second;
  const json::value gpu = device.device.is_cuda() ? json::value(json::object{{"name", device.name},
                                                                             {"memory_bytes", device.memory_bytes},
                                                                             {"driver", device.driver},
                                                                             {"nvidia_driver", device.nvidia_driver},
                                                                             {"visible", device.visible_gpus}})
                                                  : json::value(nullptr);
  return json::object{{"size", g.ranks},
                      {"nodes", ctx.layout.node_count},
                      {"hostname_rank0", ctx.layout.hostname},
                      {"device", device.device.is_cuda() ? "cuda" : "cpu"},
                      {"gpu_of_rank", to_int_array(g[Figure::GpuIndex])},
                      {"gpu", gpu},
                      {"threads_per_rank", to_int_array(g[Figure::Threads])},
                      {"threads_source", ctx.threads_source},
                      {"node_of_rank", to_int_array(g[Figure::Node])},
                      {"local_rank_of_rank", to_int_array(g[Figure::LocalRank])},
                      {"ranks_on_node_of_rank0", ctx.layout.local_size},
                      {"launcher_rank_of_rank", to_int_array(g[Figure::LauncherRank])},
                      {"launcher_local_rank_of_rank", to_int_array(g[Figure::LauncherLocalRank])},
                      {"slurm_job", ctx.launch.slurm_job_tag()},
                      {"launcher", ctx.launch.launcher},
                      {"launch_environment", launch_vars}};
}

json::object data_section(const Config& config, const ShardedDataset& data, const Gathered& g) {
  json::array class_names;
  for (const auto& c : data.meta().class_names) class_names.push_back(json::string(c));
  return json::object{{"path", data.meta().path},
                      {"name", data.meta().name},
                      {"task", task_name(data.meta().task)},
                      {"num_classes", data.meta().num_classes},
                      {"class_names", class_names},
                      {"train_samples", data.train_count()},
                      {"validation_samples", static_cast<std::int64_t>(data.split().validation.size())},
                      {"test_samples", data.meta().test.count},
                      {"normalization_mean", to_array(data.mean())},
                      {"normalization_std", to_array(data.stddev())},
                      {"hashes_verified", config.data.verify_hashes},
                      {"shard_read_seconds", spread(g[Figure::ReadSeconds])},
                      {"hash_verify_seconds", spread(g[Figure::VerifySeconds])},
                      {"bytes_read", spread(g[Figure::BytesRead])}};
}

// train.target: null without one; else the target and, once reached, where and when.
json::value time_to_target(const Config& config, const TrainResult& r) {
  if (config.train.target.empty()) return json::value(nullptr);
  json::object out{{"target", parse_metric_target(config.train.target, "train.target").describe()},
                   {"reached", r.target_reached}};
  if (r.target_reached) {
    out["value"] = r.target_value;
    out["epoch"] = r.target_epoch;
    out["step"] = r.target_step;
    out["train_seconds"] = r.target_train_seconds;
    out["wall_seconds"] = r.target_wall_seconds;
  }
  return out;
}

json::object training_section(const Config& config, const RunContext& ctx, const TrainResult& r, const Gathered& g) {
  const std::vector<double> train_seconds = g[Figure::TrainSeconds];
  const double train_wall = *std::max_element(train_seconds.begin(), train_seconds.end());
  return json::object{
      {"epochs_run", static_cast<std::int64_t>(r.epochs.size())},
      {"steps", r.steps},
      {"global_batch", config.train.batch_size},
      {"samples", r.samples},
      {"stop_reason", r.stop_reason},
      {"cuda_graphs", r.cuda_graphs},
      {"attention_backend", r.attention_backend.empty() ? json::value(nullptr) : json::value(r.attention_backend)},
      {"checkpoints", r.checkpoints},
      {"checkpoint_seconds", r.checkpoint_seconds},
      {"resumed_from", ctx.resumed_from.empty() ? json::value(nullptr) : json::value(ctx.resumed_from)},
      {"restore_seconds", r.restore_seconds},
      {"train_seconds", train_wall},
      {"samples_per_s", static_cast<double>(r.samples) / std::max(train_wall, 1e-9)},
      {"samples_per_s_per_rank", spread(g[Figure::SamplesPerS])},
      {"total_seconds", r.total_seconds},
      {"restored_best_epoch", r.restored_epoch >= 0 ? json::value(r.restored_epoch) : json::value(nullptr)},
      {"time_to_target", time_to_target(config, r)}};
}

// The grid, the schedule and, with pipeline stages, each rank's compute, wait and idle
// share of its forward-backward passes: the measured bubble beside the schedule's theory.
json::object parallel_section(const Config& config, const TrainResult& r, const Gathered& g) {
  json::object out{{"pipeline_stages", r.grid.stages},
                   {"data_parallel_replicas", r.grid.replicas},
                   {"grid_order", grid_order_name(r.grid.order)},
                   {"microbatches", config.parallel.microbatches}};
  // What each rank held for training, measured from its tensors at the end of the run.
  out["shard"] = json::object{{"stage", r.shard},
                              {"active", r.shard_active},
                              {"parameter_bytes", to_int_array(g[Figure::ParamBytes])},
                              {"gradient_bytes", to_int_array(g[Figure::GradBytes])},
                              {"optimizer_state_bytes", to_int_array(g[Figure::OptBytes])},
                              {"gradient_bucket_peak_bytes", to_int_array(g[Figure::BucketPeak])},
                              {"parameter_window_peak_bytes", to_int_array(g[Figure::WindowPeak])}};
  if (r.schedule.empty()) return out;
  const auto forward = g[Figure::PipeForward], backward = g[Figure::PipeBackward], wait = g[Figure::PipeWait],
             steps = g[Figure::PipeSteps];
  // Each rank's idle share of its own passes, and of the common windows (the theory's
  // measure): the window its replica's pipeline spans per step, part of it entry skew.
  const auto window = g[Figure::PipeWindow], busy = g[Figure::PipeWindowBusy], skew = g[Figure::PipeSkew];
  const auto ranks = static_cast<double>(steps.size());
  std::vector<double> idle(steps.size(), 0.0), window_idle(steps.size(), 0.0);
  double idle_mean = 0, window_mean = 0, skew_mean = 0;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (steps[i] > 0) idle[i] = 1.0 - (forward[i] + backward[i]) / steps[i];
    if (window[i] > 0) window_idle[i] = 1.0 - busy[i] / window[i];
    idle_mean += idle[i] / ranks;
    window_mean += window_idle[i] / ranks;
    skew_mean += window[i] > 0 ? skew[i] / window[i] / ranks : 0.0;
  }
  out["schedule"] = r.schedule;
  out["p2p"] = r.pipeline_p2p;
  out["chunks"] = config.parallel.schedule == "interleaved" ? config.parallel.chunks : 1;
  out["stage_split"] = r.stage_split;
  out["stage_of_rank"] = to_int_array(g[Figure::Stage]);
  out["forward_seconds"] = to_array(forward);
  out["backward_seconds"] = to_array(backward);
  out["wait_seconds"] = to_array(wait);
  out["pass_seconds"] = to_array(steps);
  out["idle_share"] = to_array(idle);
  out["bubble_measured"] = idle_mean;
  out["bubble_theory"] = r.theoretical_bubble;
  out["window_steps"] = to_int_array(g[Figure::PipeWindowSteps]);
  out["window_seconds"] = to_array(window);
  out["window_idle_share"] = to_array(window_idle);
  out["bubble_common_window"] = window_mean;
  out["entry_skew_share"] = skew_mean;
  // Memory per rank: what the pipeline held for backward (train/Pipeline.hpp
  // PipelineMemory), and the process's high-water marks (host RSS; GPU: 0 on the CPU).
  out["activation_peak_bytes"] = to_int_array(g[Figure::PipeHeldPeak]);
  out["microbatch_activation_bytes"] = to_int_array(g[Figure::PipeHeldMicro]);
  out["in_flight_peak"] = to_int_array(g[Figure::PipeInFlight]);
  out["peak_rss_bytes"] = to_int_array(g[Figure::PeakRss]);
  out["gpu_peak_allocated_bytes"] = to_int_array(g[Figure::GpuPeak]);
  return out;
}

// system.monitor: the monitor's samples summarized per rank, and what it cost. GPU figures
// only where some rank sampled its GPU through NVML.
json::object monitor_section(const RunContext& ctx, const Gathered& g) {
  json::object out{{"interval_s", ctx.monitor_interval},
                   {"nvml", ctx.monitor.nvml},
                   {"samples", spread(g[Figure::MonSamples])},
                   {"cpu_utilization", spread(g[Figure::MonCpu])},
                   {"rss_bytes", spread(g[Figure::MonRss])}};
  const std::pair<const char*, Figure> gpu[] = {{"gpu_utilization", Figure::MonGpuUtil},
                                                {"gpu_memory_bytes", Figure::MonGpuMemory},
                                                {"gpu_power_w", Figure::MonGpuPower}};
  for (const auto& [name, figure] : gpu) {
    const auto v = g[figure];
    if (*std::max_element(v.begin(), v.end()) >= 0) out[name] = spread(v);
  }
  const auto main = g[Figure::MonMain], train = g[Figure::TrainSeconds];
  double share = 0;
  for (std::size_t i = 0; i < main.size(); ++i) share = std::max(share, main[i] / std::max(train[i], 1e-9));
  out["main_thread_seconds"] = spread(main);
  out["sampler_seconds"] = spread(g[Figure::MonSampler]);
  out["main_thread_share_of_training"] = share;
  return out;
}

json::array to_json_array(const std::vector<std::int64_t>& v) {
  return json::array(v.begin(), v.end());
}

}  // namespace

std::string software_versions_text() {
  std::string s;
  s += "LibTorch " + std::string(TORCH_VERSION) + "\n";
  s += "MPI      " + MpiRuntime::library_version() + "\n";
  s += "HDF5     " + hdf5_library_version() + "\n";
  s += std::string("CUDA     ") + (HPCTRAIN_WITH_CUDA_KERNELS ? "compiled in, hpctrain's kernels too\n"
                                   : HPCTRAIN_WITH_CUDA       ? "compiled in\n"
                                                              : "not compiled in\n");
  s += "NCCL     " + (HPCTRAIN_WITH_NCCL ? NcclCommunicator::version() + " compiled in\n" : "not compiled in\n");
  return s;
}

std::string write_run_report(const std::string& path, const Config& config, const RunContext& ctx,
                             const ShardedDataset& data, const TrainResult& r, const Communicator& comm) {
  const DeviceInfo& device = compute_device();
  const std::vector<double> mine = rank_row(config, ctx, data, r, comm, device);
  Gathered g{comm.gather(mine.data(), kWidth, 0), comm.size()};
  if (comm.rank() != 0) return "";

  const StepTimes times = step_times(g, r.steps);
  json::array epochs;
  for (const auto& e : r.epochs) epochs.push_back(to_json(e));
  json::array overrides;
  for (const auto& o : ctx.overrides) overrides.push_back(json::string(o));
  json::object report{
      {"format", "hpctrain-report"},
      {"format_version", 1},
      {"hpctrain_version", HPCTRAIN_VERSION_STRING},
      {"software", json::object{{"libtorch", TORCH_VERSION},
                                {"mpi", MpiRuntime::library_version()},
                                {"hdf5", hdf5_library_version()},
                                {"cuda_compiled", bool(HPCTRAIN_WITH_CUDA)},
                                {"nccl_compiled", bool(HPCTRAIN_WITH_NCCL)}}},
      {"started", ctx.started},
      {"finished", utc_timestamp()},
      {"config_file", ctx.config_path},
      {"overrides", overrides},
      {"world", world_section(ctx, g, device)},
      {"data", data_section(config, data, g)},
      {"model", json::object{{"name", config.model.name},
                             {"parameters", r.parameters},
                             {"gradient_buckets", static_cast<std::int64_t>(r.buckets)},
                             {"bucket_mb", config.comm.bucket_mb},
                             {"checkpoint_every", config.model.checkpoint_every},
                             {"checkpoint_blocks", to_json_array(config.model.checkpoint_blocks)}}},
      {"communication",
       json::object{{"backend", r.backend},
                    {"overlap", r.overlap},
                    {"hierarchical", r.hierarchical.empty() ? json::value(nullptr) : json::value(r.hierarchical)},
                    {"gradient_bytes_per_step", static_cast<double>(r.parameters) * 4.0},
                    {"bytes_reduced", spread(g[Figure::CommBytes])},
                    {"exposed_share_of_step", times.exposed_share}}},
      {"training", training_section(config, ctx, r, g)},
      {"parallel", parallel_section(config, r, g)},
      {"epochs", epochs},
      {"final", final_metrics(r, data)},
      {"time_per_step_ms", times.per_step_ms},
      {"time_total_s", times.totals},
      {"memory", json::object{{"peak_rss_bytes", spread(g[Figure::PeakRss])},
                              {"gpu_allocated_bytes", spread(g[Figure::GpuAllocated])},
                              {"gpu_reserved_bytes", spread(g[Figure::GpuReserved])},
                              {"gpu_peak_allocated_bytes", spread(g[Figure::GpuPeak])}}},
      {"precision", json::object{{"mode", config.precision.mode},
                                 {"params", config.precision.params},
                                 {"loss_scaling", config.precision.mode == "fp16"},
                                 {"skipped_steps", r.skipped_steps},
                                 {"final_loss_scale", r.loss_scale}}},
      {"nonfinite", json::object{{"policy", config.train.nonfinite},
                                 {"limit", config.train.nonfinite_limit},
                                 {"applies", config.precision.mode != "fp16"},
                                 {"skipped_steps", r.nonfinite_skipped}}},
      {"system", json::object{{"load_average_1min", spread(g[Figure::Load])},
                              {"cpus_online", spread(g[Figure::CpusOnline])},
                              {"memory_bytes", spread(g[Figure::MemoryTotal])}}},
  };
  if (ctx.monitor_interval > 0) report["system"].as_object()["monitor"] = monitor_section(ctx, g);
  report["training"].as_object()["early_loss"] =
      early_loss_from_log(parent_directory(path) + "/metrics.jsonl", r.steps, config.schedule.warmup_steps);
  report["recommendations"] = recommendations(report);
  const std::string text = pretty_json(report);
  write_file_atomic(path, text);
  return text;
}

}  // namespace hpctrain
