#include "experiment/ScoringMetric.hpp"

#include "util/Error.hpp"

namespace hpctrain {

std::string resolve_search_metric(const std::string& configured, bool classification) {
  const std::string metric = configured == "auto" ? default_metric(classification) : configured;
  const MetricTask task = metric_info(metric).task;
  if (task != MetricTask::Any && (task == MetricTask::Classification) != classification) {
    throw ConfigError("search.metric: " + metric + " does not apply to " +
                      (classification ? "classification" : "regression") + " data");
  }
  return metric;
}

std::vector<std::string> fold_table_metrics(bool classification) {
  return metric_names(classification);
}

}  // namespace hpctrain
