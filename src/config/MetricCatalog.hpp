#pragma once
// The metrics hpctrain scores runs, folds and trials by: each one's name, the task it applies
// to and which direction is better. Search ranking, early stopping, the reports and the
// schema's choices all read it here (eval/Scores produces every scorer metric; a test holds
// the two together).
#include <string>
#include <vector>

namespace hpctrain {

enum class MetricTask { Any, Classification, Regression };

struct MetricInfo {
  std::string name;      // as in report.json, cv_report.json and search.metric
  MetricTask task;       // where it is defined
  bool lower_is_better;  // loss and errors; the rest rank higher-is-better
  bool from_scorer;      // computed by eval/Scores from predictions (false: the loss, from evaluation)
};

const std::vector<MetricInfo>& metric_catalog();
// The entry of `name`; throws ConfigError naming the known metrics when there is none.
const MetricInfo& metric_info(const std::string& name);
bool lower_is_better(const std::string& name);
// The metrics defined for a classification or a regression task, in catalog order.
std::vector<std::string> metric_names(bool classification);
// A metric of a split as the training loop evaluates it each epoch: "val_NAME" or
// "test_NAME", NAME in the catalog (checkpoint.keep_best, train.target).
struct SplitMetric {
  std::string split;  // "val" or "test"
  std::string name;   // in the catalog
  std::string key() const { return split + "_" + name; }
};
// Throws ConfigError naming `key` and `what` (the config key) when it is not one.
SplitMetric parse_split_metric(const std::string& text, const std::string& what);

// train.target: "SPLIT_METRIC>=VALUE" (or <=, >, <), e.g. "val_accuracy>=0.93".
struct MetricTarget {
  SplitMetric metric;
  std::string op;  // ">=", "<=", ">", "<"
  double value = 0;
  bool reached(double v) const;
  std::string describe() const;  // as written, normalized: "val_accuracy>=0.93"
};
// Throws ConfigError naming `what` when `text` is not a target.
MetricTarget parse_metric_target(const std::string& text, const std::string& what);

// search.metric=auto: accuracy for classification, rmse for regression.
std::string default_metric(bool classification);

}  // namespace hpctrain
