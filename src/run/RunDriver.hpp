#pragma once
// One `hpctrain train` run, once its command line is parsed (app/TrainCommand.cpp): the run's
// context on this rank, the resolved config, threads and device, the run directory opened
// (config.json, metrics.jsonl, the banner), then plain data-parallel training or a
// cross-validation/search over groups of ranks (experiment/) with its final retrain, and the
// report and summary. Collective over `world`; every step that can fail on some ranks only
// goes through collective_check (docs/architecture.md, "Data flow").
#include <string>
#include <vector>

#include "comm/Communicator.hpp"
#include "config/Schema.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "run/RunReport.hpp"
#include "train/MetricsLog.hpp"
#include "train/Trainer.hpp"

namespace hpctrain {

// Everything `hpctrain train CONFIG [key=value ...]` does. Returns the exit code.
int drive_run(const std::string& config_path, const std::vector<std::string>& overrides, const Communicator& world);

// The run's context on this rank: start time, the launcher's view and the process layout
// (collective: node communicator). Throws UsageError when the launcher started a different
// number of ranks than MPI's world holds.
RunContext make_run_context(const std::string& config_path, const std::vector<std::string>& overrides,
                            const Communicator& world);

// The config with overrides; an empty run.dir becomes the launch's default run directory
// (named after the Slurm job and array task, or after the config file). What
// `hpctrain config CONFIG` prints and what a run writes as config.json.
ResolvedConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                               const LaunchEnvironment& launch);

// The line rank 0 prints as a run starts (no newline).
std::string run_banner(const RunContext& context, int ranks, const std::string& run_dir);

// The one place a run directory is opened (checked): rank 0 creates `run_dir`, writes
// `resolved_json` as config.json and, given `log`, opens metrics.jsonl there (appended to when
// `resumed`); then rank 0 prints the banner.
void open_run_directory(const std::string& run_dir, const std::string& resolved_json, const RunContext& context,
                        const Communicator& world, MetricsLog* log = nullptr, bool resumed = false);

// What rank 0 prints after training: steps, throughput (over `train_seconds`, the slowest
// rank's), the last validation and the test figures, and where the report and metrics are.
std::string training_summary(const TrainResult& result, double train_seconds, bool classification,
                             const std::string& run_dir);

}  // namespace hpctrain
