#pragma once
// report.json: rank 0 gathers every rank's figures and writes the run's report
// (docs/outputs.md). Collective over the training communicator.
#include <string>
#include <vector>

#include "comm/Communicator.hpp"
#include "config/Config.hpp"
#include "data/ShardedDataset.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "launch/ProcessLayout.hpp"
#include "run/SystemMonitor.hpp"
#include "train/Trainer.hpp"

namespace hpctrain {

struct RunContext {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string started;         // ISO 8601 UTC
  int threads = 1;             // this rank's intra-op threads
  std::string threads_source;  // what chose them: run.threads, SLURM_CPUS_PER_TASK or affinity
  std::string resumed_from;    // checkpoint the run continued from (empty: a fresh start)
  ProcessLayout layout;
  LaunchEnvironment launch;
  double monitor_interval = 0;  // run.monitor_seconds of the run (0: no monitor)
  MonitorSummary monitor;       // this rank's monitor samples, summarized
};

// Returns the report text on rank 0 (empty elsewhere) and writes it to RUN_DIR/report.json.
std::string write_run_report(const std::string& path, const Config& config, const RunContext& context,
                             const ShardedDataset& data, const TrainResult& result, const Communicator& comm);

std::string software_versions_text();  // for --version

}  // namespace hpctrain
