#include "experiment/TrialSummary.hpp"

#include <cmath>

namespace hpctrain {

TrialSummary summarize_trial(const std::vector<const TaskOutcome*>& ok) {
  std::map<std::string, std::vector<double>> columns;
  for (const TaskOutcome* o : ok) {
    for (const auto& kv : o->metrics) {
      if (kv.value().is_number() && kv.key() != "count")
        columns[std::string(kv.key())].push_back(json_number(kv.value()));
    }
    columns["train_seconds"].push_back(o->train_seconds);
    columns["samples_per_s"].push_back(o->samples_per_s);
  }
  TrialSummary out;
  for (const auto& [name, values] : columns) out[name] = summarize(values);
  return out;
}

double summary_mean(const TrialSummary& summary, const std::string& name) {
  const auto it = summary.find(name);
  return it == summary.end() ? std::nan("") : it->second.mean;
}

double summary_std(const TrialSummary& summary, const std::string& name) {
  const auto it = summary.find(name);
  return it == summary.end() ? std::nan("") : it->second.std;
}

std::int64_t summary_count(const TrialSummary& summary, const std::string& name) {
  const auto it = summary.find(name);
  return it == summary.end() ? 0 : it->second.n;
}

boost::json::object to_json(const TrialSummary& summary) {
  boost::json::object out;
  for (const auto& [name, s] : summary) out[name] = to_json(s);
  return out;
}

}  // namespace hpctrain
