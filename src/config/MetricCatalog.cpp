#include "config/MetricCatalog.hpp"

#include <cmath>
#include <sstream>

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

SplitMetric parse_split_metric(const std::string& text, const std::string& what) {
  SplitMetric m;
  for (const char* split : {"val", "test"}) {
    const std::string prefix = std::string(split) + "_";
    if (text.rfind(prefix, 0) == 0) {
      m.split = split;
      m.name = text.substr(prefix.size());
    }
  }
  if (m.split.empty()) {
    throw ConfigError(what +
                      ": expected val_METRIC or test_METRIC (METRIC: loss, accuracy, f1_macro, rmse, r2, "
                      "...), found \"" +
                      text + "\"");
  }
  try {
    metric_info(m.name);
  } catch (const ConfigError& e) {
    throw ConfigError(what + ": \"" + text + "\": " + e.what());
  }
  return m;
}

bool MetricTarget::reached(double v) const {
  if (op == ">=") return v >= value;
  if (op == "<=") return v <= value;
  if (op == ">") return v > value;
  return v < value;
}

std::string MetricTarget::describe() const {
  std::ostringstream out;
  out << metric.key() << op << value;
  return out.str();
}

MetricTarget parse_metric_target(const std::string& text, const std::string& what) {
  MetricTarget t;
  std::string spaced;
  for (char c : text) {
    if (c != ' ') spaced += c;
  }
  const std::size_t at = spaced.find_first_of("<>");
  if (at == std::string::npos || at == 0) {
    throw ConfigError(what + ": expected METRIC>=VALUE (or <=, >, <), e.g. val_accuracy>=0.93, found \"" + text + "\"");
  }
  t.op = spaced.substr(at, at + 1 < spaced.size() && spaced[at + 1] == '=' ? 2 : 1);
  t.metric = parse_split_metric(spaced.substr(0, at), what);
  const std::string number = spaced.substr(at + t.op.size());
  std::size_t used = 0;
  try {
    t.value = std::stod(number, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (number.empty() || used != number.size() || !std::isfinite(t.value)) {
    throw ConfigError(what + ": \"" + text + "\": expected a number after " + t.op + ", found \"" + number + "\"");
  }
  return t;
}

std::string default_metric(bool classification) {
  return classification ? "accuracy" : "rmse";
}

}  // namespace hpctrain
