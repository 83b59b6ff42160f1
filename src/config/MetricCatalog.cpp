#include "config/MetricCatalog.hpp"

#include "util/Error.hpp"

namespace hpctrain {

const std::vector<MetricInfo>& metric_catalog() {
  using T = MetricTask;
  static const std::vector<MetricInfo> catalog = {
      {"loss", T::Any, true, false},
      {"accuracy", T::Classification, false, true},
      {"balanced_accuracy", T::Classification, false, true},
      {"precision_macro", T::Classification, false, true},
      {"recall_macro", T::Classification, false, true},
      {"f1_macro", T::Classification, false, true},
      {"precision_weighted", T::Classification, false, true},
      {"recall_weighted", T::Classification, false, true},
      {"f1_weighted", T::Classification, false, true},
      {"mse", T::Regression, true, true},
      {"rmse", T::Regression, true, true},
      {"mae", T::Regression, true, true},
      {"r2", T::Regression, false, true},
      {"pearson", T::Regression, false, true},
  };
  return catalog;
}

const MetricInfo& metric_info(const std::string& name) {
  for (const auto& m : metric_catalog()) {
    if (m.name == name) return m;
  }
  std::string known;
  for (const auto& m : metric_catalog()) known += (known.empty() ? "" : ", ") + m.name;
  throw ConfigError("unknown metric \"" + name + "\" (known: " + known + ")");
}

bool lower_is_better(const std::string& name) {
  return metric_info(name).lower_is_better;
}

std::vector<std::string> metric_names(bool classification) {
  std::vector<std::string> out;
  const MetricTask task = classification ? MetricTask::Classification : MetricTask::Regression;
  for (const auto& m : metric_catalog()) {
    if (m.task == MetricTask::Any || m.task == task) out.push_back(m.name);
  }
  return out;
}

std::string default_metric(bool classification) {
  return classification ? "accuracy" : "rmse";
}

}  // namespace hpctrain
