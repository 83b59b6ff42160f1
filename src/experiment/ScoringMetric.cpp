#include "experiment/ScoringMetric.hpp"

#include "util/Error.hpp"

namespace hpctrain {

std::string resolve_search_metric(const std::string& configured, bool classification) {
  const std::string metric = configured == "auto" ? (classification ? "accuracy" : "rmse") : configured;
  const bool classification_metric = metric != "loss" && metric != "mse" && metric != "rmse" && metric != "mae" &&
                                     metric != "r2" && metric != "pearson";
  if (classification != classification_metric && metric != "loss") {
    throw ConfigError("search.metric: " + metric + " does not apply to " +
                      (classification ? "classification" : "regression") + " data");
  }
  return metric;
}

bool lower_is_better(const std::string& metric) {
  return metric == "loss" || metric == "mse" || metric == "rmse" || metric == "mae";
}

std::vector<std::string> fold_table_metrics(bool classification) {
  if (classification) {
    return {"loss",     "accuracy",           "balanced_accuracy", "precision_macro", "recall_macro",
            "f1_macro", "precision_weighted", "recall_weighted",   "f1_weighted"};
  }
  return {"loss", "mse", "rmse", "mae", "r2", "pearson"};
}

}  // namespace hpctrain
