#pragma once
// What to change after a run: a rule set over the figures report.json holds. Each rule
// compares one measured figure with a named threshold (docs/outputs.md, "Recommendations")
// and, when it fires, quotes the figure as evidence and names the setting to change. The
// rules read the report only, never the config or the process, so a report written earlier
// can be judged again and each rule is tested on constructed reports.
#include <boost/json.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace hpctrain {

namespace recommendation_thresholds {
constexpr std::int64_t kMinSteps = 10;        // timing rules need this many steps
constexpr double kInputBoundShare = 0.20;     // data phase / time per step
constexpr double kCommBoundShare = 0.15;      // communication.exposed_share_of_step
constexpr double kStragglerRatio = 1.15;      // slowest rank's compute per step / the median rank's
constexpr double kMemoryHighShare = 0.90;     // peak memory / memory of the device or node
constexpr double kMemoryLowShare = 0.40;      // below: headroom
constexpr double kThreadsPerCpu = 1.0;        // compute threads on a node / its online CPUs
constexpr double kCheckpointShare = 0.05;     // checkpoint seconds / training's total seconds
constexpr double kGpuUtilizationLow = 0.60;   // mean GPU utilization (system.monitor)
constexpr double kLossScaleSkipShare = 0.02;  // fp16 steps skipped / steps
constexpr double kEarlyLossRise = 1.5;        // early loss / lowest loss logged before it
}  // namespace recommendation_thresholds

// The recommendations for one report.json (its top-level object): an array of
// {rule, severity ("warning" or "info"), evidence, suggestion, value, threshold}, in the
// order of the rules. Figures a report lacks (older formats, CPU runs) silence their rule.
boost::json::array recommendations(const boost::json::value& report);

// The console's lines for them; with none, one line saying that no rule fired.
std::string recommendations_text(const boost::json::array& recommendations);

// training.early_loss: over the logged step losses ({step, loss} in order; null losses
// skipped) within the first fifth of `total_steps`, the largest ratio of a loss to the
// lowest loss logged before it, and where it happened.
struct StepLoss {
  std::int64_t step = 0;
  double loss = 0;
};
boost::json::object early_loss_figure(const std::vector<StepLoss>& losses, std::int64_t total_steps,
                                      std::int64_t warmup_steps);
// The same from the step lines of a metrics.jsonl (a resumed run's file holds the lines of
// its earlier parts too); a missing file or unreadable lines give no losses.
boost::json::object early_loss_from_log(const std::string& metrics_path, std::int64_t total_steps,
                                        std::int64_t warmup_steps);

}  // namespace hpctrain
