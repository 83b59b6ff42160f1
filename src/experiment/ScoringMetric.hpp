#pragma once
// What the experiment layer knows about metric names: which one search.metric=auto means,
// which apply to classification or regression, which direction is better, and the columns
// of the per-fold table. The one home of that knowledge in experiment/ until config/ holds
// the metric catalog that eval/ and train/ share; nothing else here names a metric.
#include <string>
#include <vector>

namespace hpctrain {

// search.metric resolved for the data: auto is accuracy for classification, RMSE for
// regression. Throws ConfigError when the metric does not apply to the data's task.
std::string resolve_search_metric(const std::string& configured, bool classification);

// True for the losses and errors (loss, mse, rmse, mae); false for the scores.
bool lower_is_better(const std::string& metric);

// The metric columns of cv_folds.csv and the rows of cv_summary.md, in order.
std::vector<std::string> fold_table_metrics(bool classification);

}  // namespace hpctrain
