#include "run/RunReport.hpp"

#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <numeric>

#include "comm/NcclCommunicator.hpp"
#include "io/Hdf5.hpp"
#include "launch/Mpi.hpp"
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
  json::array a;
  for (double x : v) a.push_back(x);
  return a;
}

json::array to_int_array(const std::vector<double>& v) {
  json::array a;
  for (double x : v) a.push_back(static_cast<std::int64_t>(x));
  return a;
}

}  // namespace

std::string utc_timestamp() {
  char text[32] = {0};
  const std::time_t now = std::time(nullptr);
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

std::string software_versions_text() {
  std::string s;
  s += "LibTorch " + std::string(TORCH_VERSION) + "\n";
  s += "MPI      " + MpiRuntime::library_version() + "\n";
  s += "HDF5     " + hdf5_library_version() + "\n";
  s += std::string("CUDA     ") + (HPCTRAIN_WITH_CUDA ? "compiled in" : "not compiled in") + "\n";
  s += std::string("NCCL     ") +
       (HPCTRAIN_WITH_NCCL ? NcclCommunicator::version() + " compiled in" : "not compiled in") + "\n";
  return s;
}

std::string write_run_report(const std::string& path, const Config& config, const RunContext& ctx,
                             const ShardedDataset& data, const TrainResult& r, const Communicator& comm) {
  // One row of figures per rank, gathered in one call.
  constexpr std::size_t kPhases = static_cast<std::size_t>(Phase::Count);
  std::vector<double> mine;
  for (std::size_t i = 0; i < kPhases; ++i) mine.push_back(r.timer.all()[i]);
  const double local_samples =
      static_cast<double>(r.steps * batch_slice(config.train.batch_size, comm.size(), comm.rank()).size());
  mine.push_back(r.train_seconds);
  mine.push_back(local_samples / std::max(r.train_seconds, 1e-9));
  mine.push_back(static_cast<double>(peak_rss_bytes()));
  mine.push_back(static_cast<double>(ctx.threads));
  mine.push_back(data.load_stats().read_seconds);
  mine.push_back(data.load_stats().verify_seconds);
  mine.push_back(static_cast<double>(data.load_stats().bytes_read));
  mine.push_back(load_average_1min());
  mine.push_back(static_cast<double>(ctx.layout.node_index));
  mine.push_back(r.comm.total_seconds);
  mine.push_back(static_cast<double>(r.comm.bytes));
  mine.push_back(static_cast<double>(ctx.layout.local_rank));
  mine.push_back(static_cast<double>(ctx.launch.launcher_rank()));
  mine.push_back(static_cast<double>(ctx.launch.launcher_local_rank()));
  const DeviceInfo& device = compute_device();
  const DeviceMemory gpu_memory = device_memory(device.device);
  mine.push_back(static_cast<double>(gpu_memory.allocated));
  mine.push_back(static_cast<double>(gpu_memory.reserved));
  mine.push_back(static_cast<double>(gpu_memory.peak));
  mine.push_back(static_cast<double>(device.device.is_cuda() ? device.device.index() : -1));
  const std::size_t width = mine.size();
  const std::vector<double> all = comm.gather(mine.data(), width, 0);
  if (comm.rank() != 0) return "";

  auto column = [&](std::size_t c) {
    std::vector<double> v;
    for (int rank = 0; rank < comm.size(); ++rank) v.push_back(all[rank * width + c]);
    return v;
  };
  const double steps = static_cast<double>(std::max<std::int64_t>(1, r.steps));
  json::object per_step_ms, totals;
  double step_total = 0;
  for (std::size_t i = 0; i < kPhases; ++i) {
    const auto phase = static_cast<Phase>(i);
    auto v = column(i);
    totals[phase_name(phase)] = spread(v);
    if (phase == Phase::Eval) continue;
    for (auto& x : v) x = 1000.0 * x / steps;
    step_total += std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    per_step_ms[phase_name(phase)] = spread(v);
  }
  per_step_ms["total_mean"] = step_total;
  {
    // Duration of the reductions themselves, overlapped with backward or not.
    auto v = column(kPhases + 9);
    totals["comm_total"] = spread(v);
    for (auto& x : v) x = 1000.0 * x / steps;
    per_step_ms["comm_total"] = spread(v);
  }

  const double exposed_share =
      step_total > 0 ? per_step_ms["comm_exposed"].as_object()["mean"].as_double() / step_total : 0.0;
  json::array epochs;
  for (const auto& e : r.epochs) epochs.push_back(to_json(e));
  json::object final_metrics;
  if (!r.epochs.empty()) {
    const auto& last = r.epochs.back();
    final_metrics["train_loss"] = last.train_loss;
    if (last.classification) final_metrics["train_accuracy"] = last.train_accuracy;
    if (last.has_validation) {
      final_metrics["val_loss"] = last.val_loss;
      if (last.classification) final_metrics["val_accuracy"] = last.val_accuracy;
    }
  }
  if (r.has_test && !data.classification()) {
    final_metrics["test_loss"] = r.test.loss;
    final_metrics["test_mse"] = r.test.mse;
    final_metrics["test_rmse"] = std::sqrt(r.test.mse);
    final_metrics["test_mae"] = r.test.mae;
    add_forecast_figures(final_metrics, r.test, "test_");
    final_metrics["test_samples"] = r.test.count;
  }
  if (r.has_test && data.classification()) {
    final_metrics["test_loss"] = r.test.loss;
    final_metrics["test_accuracy"] = r.test.accuracy;
    final_metrics["test_samples"] = r.test.count;
    json::array confusion;
    for (std::int64_t i = 0; i < r.test.num_classes; ++i) {
      json::array row;
      for (std::int64_t j = 0; j < r.test.num_classes; ++j) row.push_back(r.test.confusion[i * r.test.num_classes + j]);
      confusion.push_back(row);
    }
    final_metrics["test_confusion"] = confusion;
  }
  json::object launch_vars;
  for (const auto& kv : ctx.launch.variables) launch_vars[kv.first] = kv.second;
  json::array overrides;
  for (const auto& o : ctx.overrides) overrides.push_back(json::string(o));
  json::array class_names;
  for (const auto& c : data.meta().class_names) class_names.push_back(json::string(c));

  const std::vector<double> train_seconds = column(kPhases);
  const double train_wall = *std::max_element(train_seconds.begin(), train_seconds.end());
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
      {"world",
       json::object{{"size", comm.size()},
                    {"nodes", ctx.layout.node_count},
                    {"hostname_rank0", ctx.layout.hostname},
                    {"device", device.device.is_cuda() ? "cuda" : "cpu"},
                    {"gpu_of_rank", to_int_array(column(kPhases + 17))},
                    {"gpu", device.device.is_cuda() ? json::value(json::object{{"name", device.name},
                                                                               {"memory_bytes", device.memory_bytes},
                                                                               {"driver", device.driver},
                                                                               {"nvidia_driver", device.nvidia_driver},
                                                                               {"visible", device.visible_gpus}})
                                                    : json::value(nullptr)},
                    {"threads_per_rank", to_int_array(column(kPhases + 3))},
                    {"threads_source", ctx.threads_source},
                    {"node_of_rank", to_int_array(column(kPhases + 8))},
                    {"local_rank_of_rank", to_int_array(column(kPhases + 11))},
                    {"ranks_on_node_of_rank0", ctx.layout.local_size},
                    {"launcher_rank_of_rank", to_int_array(column(kPhases + 12))},
                    {"launcher_local_rank_of_rank", to_int_array(column(kPhases + 13))},
                    {"slurm_job", ctx.launch.slurm_job_tag()},
                    {"launcher", ctx.launch.launcher},
                    {"launch_environment", launch_vars}}},
      {"data", json::object{{"path", data.meta().path},
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
                            {"shard_read_seconds", spread(column(kPhases + 4))},
                            {"hash_verify_seconds", spread(column(kPhases + 5))},
                            {"bytes_read", spread(column(kPhases + 6))}}},
      {"model", json::object{{"name", config.model.name},
                             {"parameters", r.parameters},
                             {"gradient_buckets", static_cast<std::int64_t>(r.buckets)},
                             {"bucket_mb", config.comm.bucket_mb}}},
      {"communication", json::object{{"backend", r.backend},
                                     {"overlap", r.overlap},
                                     {"gradient_bytes_per_step", static_cast<double>(r.parameters) * 4.0},
                                     {"bytes_reduced", spread(column(kPhases + 10))},
                                     {"exposed_share_of_step", exposed_share}}},
      {"training",
       json::object{{"epochs_run", static_cast<std::int64_t>(r.epochs.size())},
                    {"steps", r.steps},
                    {"global_batch", config.train.batch_size},
                    {"samples", r.samples},
                    {"stop_reason", r.stop_reason},
                    {"cuda_graphs", r.cuda_graphs},
                    {"checkpoints", r.checkpoints},
                    {"checkpoint_seconds", r.checkpoint_seconds},
                    {"resumed_from", ctx.resumed_from.empty() ? json::value(nullptr) : json::value(ctx.resumed_from)},
                    {"train_seconds", train_wall},
                    {"samples_per_s", static_cast<double>(r.samples) / std::max(train_wall, 1e-9)},
                    {"samples_per_s_per_rank", spread(column(kPhases + 1))},
                    {"total_seconds", r.total_seconds}}},
      {"epochs", epochs},
      {"final", final_metrics},
      {"time_per_step_ms", per_step_ms},
      {"time_total_s", totals},
      {"memory", json::object{{"peak_rss_bytes", spread(column(kPhases + 2))},
                              {"gpu_allocated_bytes", spread(column(kPhases + 14))},
                              {"gpu_reserved_bytes", spread(column(kPhases + 15))},
                              {"gpu_peak_allocated_bytes", spread(column(kPhases + 16))}}},
      {"precision", json::object{{"mode", config.precision.mode},
                                 {"loss_scaling", config.precision.mode == "fp16"},
                                 {"skipped_steps", r.skipped_steps},
                                 {"final_loss_scale", r.loss_scale}}},
      {"system", json::object{{"load_average_1min", spread(column(kPhases + 7))}}},
  };
  const std::string text = pretty_json(report);
  write_file_atomic(path, text);
  return text;
}

}  // namespace hpctrain
