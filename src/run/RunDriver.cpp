#include "run/RunDriver.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "checkpoint/Checkpoint.hpp"
#include "comm/ProcessGrid.hpp"
#include "config/Resume.hpp"
#include "data/ShardedDataset.hpp"
#include "experiment/Experiment.hpp"
#include "launch/ProcessLayout.hpp"
#include "launch/Signals.hpp"
#include "run/MonitorLog.hpp"
#include "run/Recommendations.hpp"
#include "train/Device.hpp"
#include "train/PipelineSchedule.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

void configure_threads(const RunConfig& run, RunContext& context) {
  const ThreadChoice choice =
      choose_threads(run.threads, context.launch, context.layout.cpus_in_mask, context.layout.ranks_sharing_cpus);
  context.threads = choice.threads;
  context.threads_source = choice.source;
  torch::set_num_threads(context.threads);
}

// The checkpoint to resume from under checkpoint.resume, verified, or none. Rank 0 picks
// (reporting corrupt files it passes over); every rank then reads the chosen one.
std::optional<CheckpointInfo> choose_resume(const Config& config, const std::string& dir, const std::string& resolved,
                                            const Communicator& world) {
  const std::string& mode = config.checkpoint.resume;
  if (mode == "none") return std::nullopt;
  std::string path;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    if (mode != "auto") {
      verify_checkpoint(mode);
      path = mode;
      return;
    }
    const auto candidates = list_checkpoints(dir);
    for (const auto& candidate : candidates) {
      try {
        verify_checkpoint(candidate);
        path = candidate;
        break;
      } catch (const DataError& e) {
        std::fprintf(stderr, "hpctrain: warning: skipping checkpoint: %s\n", e.what());
      }
    }
    // Starting fresh beside checkpoints that exist but do not verify would hide lost work.
    if (path.empty() && !candidates.empty()) {
      throw DataError("checkpoint.resume=auto: none of the " + std::to_string(candidates.size()) + " checkpoints in " +
                      dir + " verifies (warnings above); move them away or set checkpoint.resume=none to start over");
    }
  });
  world.broadcast(path, 0);
  if (path.empty()) {
    if (world.rank() == 0) std::printf("checkpoint.resume=auto: no checkpoint in %s, starting fresh\n", dir.c_str());
    return std::nullopt;
  }
  CheckpointInfo info;
  collective_check(world, [&] {
    info = verify_checkpoint(path, /*data=*/false);  // rank 0 verified its data above
    const auto changes = resume_config_changes(info.config_json, resolved);
    if (!changes.empty()) {
      std::string list;
      for (const auto& c : changes) list += "\n  " + c;
      throw ConfigError(path +
                        ": the config differs from the checkpoint's in keys a resume cannot change "
                        "(docs/checkpoints.md lists those it can):" +
                        list);
    }
  });
  return info;
}

// Collective over `shards` (the data-parallel axis), whose ranks each read one shard.
ShardedDataset load_data(const Config& config, const Communicator& shards, const Communicator& world) {
  ShardedDataset data = ShardedDataset::load(config.data, static_cast<std::uint64_t>(config.train.seed), shards);
  if (world.rank() == 0) {
    std::printf("data %s: %lld train / %zu validation / %lld test samples, shard read %.2f s, hashes %s\n",
                config.data.path.c_str(), static_cast<long long>(data.train_count()), data.split().validation.size(),
                static_cast<long long>(data.meta().test.count), data.load_stats().read_seconds,
                config.data.verify_hashes ? "verified" : "not verified");
    std::fflush(stdout);
  }
  return data;
}

// Plain data-parallel training of `resolved` over `world`, writing run.dir.
void train_once(const ResolvedConfig& resolved, RunContext& context, const Communicator& world) {
  const Config& config = resolved.config;
  const std::string run_dir = config.run.dir;
  const std::string checkpoint_dir = config.checkpoint.dir.empty() ? run_dir + "/checkpoints" : config.checkpoint.dir;
  install_preemption_handlers();
  collective_check(world, [&] {
    if (world.rank() == 0) make_directories(checkpoint_dir);
  });
  const std::optional<CheckpointInfo> resume = choose_resume(config, checkpoint_dir, resolved.resolved_json, world);
  if (resume && world.rank() == 0) {
    std::printf("resuming from %s (step %lld, epoch %lld, written by %s)\n", resume->path.c_str(),
                static_cast<long long>(resume->step), static_cast<long long>(resume->position.epoch),
                resume->describe_layout().c_str());
  }
  context.resumed_from = resume ? resume->path : std::string();
  MetricsLog log;
  open_run_directory(run_dir, resolved.resolved_json, context, world, &log, resume.has_value());
  // Pipeline stages x data-parallel replicas; each replica's stages read the same shard.
  std::unique_ptr<ProcessGrid> grid;
  collective_check(world, [&] {
    grid = std::make_unique<ProcessGrid>(world, static_cast<int>(config.parallel.pipeline_stages),
                                         parse_grid_order(config.parallel.grid_order));
  });
  ShardedDataset data = load_data(config, grid->data(), world);

  // A resume keeps the checkpoint's stage split when parallel.stage_split is auto, so each
  // block's dropout draws stay on the rank whose generator the checkpoint holds.
  Config trainer_config = config;
  ParallelConfig& pc = trainer_config.parallel;
  const std::int64_t virtual_stages =
      pc.pipeline_stages * (parse_schedule_kind(pc.schedule) == ScheduleKind::Interleaved ? pc.chunks : 1);
  if (resume && pc.stage_split.empty() && static_cast<std::int64_t>(resume->stage_split.size()) == virtual_stages - 1) {
    pc.stage_split = resume->stage_split;
  }
  std::unique_ptr<Trainer> trainer;
  collective_check(world, [&] {
    trainer = std::make_unique<Trainer>(trainer_config, *grid, data, log);
    trainer->enable_checkpoints(checkpoint_dir, resolved.resolved_json);
    trainer->set_profile_prefix(run_dir + "/profile");
    if (resume) trainer->resume_from(*resume);
  });
  const DeviceInfo& device = compute_device();
  MonitorLog monitor(config.run.monitor_seconds, device.device.is_cuda() ? static_cast<int>(device.device.index()) : -1,
                     world, &log);
  if (monitor.enabled()) trainer->set_step_callback([&monitor] { monitor.on_callback(); });
  TrainResult result;
  try {
    result = trainer->run();
  } catch (const CollectiveError&) {
    monitor.finish();  // every rank throws it (a preemption): nothing stays in flight
    throw;
  }
  monitor.finish();
  context.monitor_interval = monitor.interval();
  context.monitor = monitor.summary();

  std::string report;
  collective_check(world, [&] {
    log.close();
    report = write_run_report(run_dir + "/report.json", config, context, data, result, world);
  });
  // As in report.json: the slowest rank's training time.
  double train_seconds = result.train_seconds;
  world.allreduce_max(&train_seconds, 1);
  if (world.rank() == 0) {
    std::printf("%s", training_summary(result, train_seconds, data.classification(), run_dir).c_str());
    const boost::json::value parsed = boost::json::parse(report);
    std::printf("%s", recommendations_text(parsed.at("recommendations").as_array()).c_str());
    std::fflush(stdout);
  }
}

// Cross-validation or search over groups of ranks, then optionally the final retrain of the
// chosen configuration on the whole training split (all ranks, test once).
void run_experiment_and_retrain(const ResolvedConfig& resolved, RunContext& context, const Communicator& world) {
  const Config& config = resolved.config;
  const std::string run_dir = config.run.dir;
  open_run_directory(run_dir, resolved.resolved_json, context, world);
  // SIGTERM/SIGUSR1 stop the running tasks at their next step; finished ones are recorded.
  install_preemption_handlers();
  const ExperimentResult result = run_experiment(resolved, world, run_dir);
  if (world.rank() == 0) {
    std::printf("\n%s\nreports: %s/\n", result.summary_text.c_str(), run_dir.c_str());
    std::fflush(stdout);
  }
  if (!result.any_ok) throw CollectiveError("every fold or trial failed (see " + run_dir + ")", 0, 1);
  if (!config.cv.final_retrain) return;
  ResolvedConfig final_config;
  collective_check(world, [&] {
    final_config = parse_config(result.chosen_config, run_dir + " (chosen configuration)",
                                {"data.val_fraction=0", "train.test_at_end=true", "train.early_stop_patience=0",
                                 "run.dir=" + run_dir + "/final"});
  });
  if (world.rank() == 0) std::printf("\nfinal retrain on the whole training split:\n");
  train_once(final_config, context, world);
}

}  // namespace

RunContext make_run_context(const std::string& config_path, const std::vector<std::string>& overrides,
                            const Communicator& world) {
  RunContext context;
  context.config_path = config_path;
  context.overrides = overrides;
  context.started = utc_timestamp();
  context.launch = LaunchEnvironment::detect();
  context.layout = ProcessLayout::discover(world.raw());
  if (const std::string problem = context.launch.world_size_mismatch(world.size()); !problem.empty()) {
    throw UsageError(problem);
  }
  return context;
}

ResolvedConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                               const LaunchEnvironment& launch) {
  ResolvedConfig resolved = load_config(path, overrides);
  if (!resolved.config.run.dir.empty()) return resolved;
  std::vector<std::string> with_dir = overrides;
  with_dir.push_back("run.dir=" + launch.default_run_dir(path));
  return load_config(path, with_dir);
}

std::string run_banner(const RunContext& context, int ranks, const std::string& run_dir) {
  return std::string("hpctrain ") + HPCTRAIN_VERSION_STRING + ": " + std::to_string(ranks) + " ranks on " +
         std::to_string(context.layout.node_count) + " node(s), " + std::to_string(context.threads) +
         " threads per rank, run directory " + run_dir;
}

void open_run_directory(const std::string& run_dir, const std::string& resolved_json, const RunContext& context,
                        const Communicator& world, MetricsLog* log, bool resumed) {
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    make_directories(run_dir);
    write_file_atomic(run_dir + "/config.json", resolved_json);
    if (log) *log = MetricsLog(run_dir + "/metrics.jsonl", resumed);
  });
  if (world.rank() == 0) {
    std::printf("%s\n", run_banner(context, world.size(), run_dir).c_str());
    std::fflush(stdout);
  }
}

std::string training_summary(const TrainResult& result, double train_seconds, bool classification,
                             const std::string& run_dir) {
  char line[256];
  std::string text;
  auto add = [&](const char* format, auto... values) {
    std::snprintf(line, sizeof(line), format, values...);
    text += line;
  };
  add("\nsummary: %lld steps, %.0f samples/s, train %.1f s\n", static_cast<long long>(result.steps),
      static_cast<double>(result.samples) / std::max(train_seconds, 1e-9), train_seconds);
  if (!result.epochs.empty() && result.epochs.back().has_validation) {
    add("  validation: loss %.4f", result.epochs.back().val_loss);
    if (classification) add(" accuracy %.4f", result.epochs.back().val_accuracy);
    text += "\n";
  }
  if (result.has_test) {
    add("  test:       loss %.4f", result.test.loss);
    if (classification) {
      add(" accuracy %.4f", result.test.accuracy);
    } else {
      add(" rmse %.4f mae %.4f", std::sqrt(result.test.mse), result.test.mae);
      if (!result.test.quantile_coverage.empty()) add(" quantile loss %.4f", result.test.quantile_loss);
    }
    text += "\n";
  }
  return text + "report: " + run_dir + "/report.json\nmetrics: " + run_dir + "/metrics.jsonl\n";
}

int drive_run(const std::string& config_path, const std::vector<std::string>& overrides, const Communicator& world) {
  RunContext context = make_run_context(config_path, overrides, world);
  ResolvedConfig resolved;
  collective_check(world, [&] { resolved = load_run_config(config_path, overrides, context.launch); });
  const Config& config = resolved.config;
  configure_threads(config.run, context);
  collective_check(world, [&] {
    const DeviceInfo& device =
        select_compute_device(config.device, context.layout.local_rank, context.layout.local_size);
    if (world.rank() == 0 && !device.notice.empty()) std::printf("%s\n", device.notice.c_str());
  });
  if (config.cv.folds == 0 && config.search.method == "none") {
    train_once(resolved, context, world);
  } else {
    run_experiment_and_retrain(resolved, context, world);
  }
  return 0;
}

}  // namespace hpctrain
