#pragma once
// The experiment's view of the metric catalog (config/MetricCatalog.hpp, which says each
// metric's task and direction): search.metric resolved for the data, and the columns of
// the per-fold table.
#include <string>
#include <vector>

#include "config/MetricCatalog.hpp"

namespace hpctrain {

// search.metric resolved for the data: auto is accuracy for classification, RMSE for
// regression. Throws ConfigError when the metric does not apply to the data's task.
std::string resolve_search_metric(const std::string& configured, bool classification);

// The metric columns of cv_folds.csv and the rows of cv_summary.md, in order.
std::vector<std::string> fold_table_metrics(bool classification);

}  // namespace hpctrain
