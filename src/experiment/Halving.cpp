#include "experiment/Halving.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

namespace hpctrain {

std::vector<RungScore> score_rung(const std::vector<int>& trials, const std::vector<TaskOutcome>& outcomes,
                                  const std::string& metric, std::size_t split_count) {
  std::map<int, std::vector<const TaskOutcome*>> ok;
  for (const auto& o : outcomes) {
    if (o.ok()) ok[o.trial].push_back(&o);
  }
  std::vector<RungScore> scores;
  for (int t : trials) {
    RungScore s;
    s.trial = t;
    const auto it = ok.find(t);
    s.any_ok = it != ok.end();
    if (s.any_ok) s.summary = summarize_trial(it->second);
    s.score = summary_mean(s.summary, metric);
    s.complete = summary_count(s.summary, metric) == static_cast<std::int64_t>(split_count);
    scores.push_back(std::move(s));
  }
  return scores;
}

void update_standings(const std::vector<RungScore>& scores, int rung, std::vector<TrialStanding>& standings) {
  for (const auto& s : scores) {
    if (!s.any_ok) continue;
    TrialStanding& standing = standings.at(static_cast<std::size_t>(s.trial));
    standing.summary = s.summary;
    standing.reached = rung;
    standing.incomplete = !s.complete;
  }
}

std::vector<int> rank_rung(const std::vector<RungScore>& scores, bool lower_is_better) {
  std::vector<std::tuple<int, double, int>> ranked;
  for (const auto& s : scores) {
    if (std::isfinite(s.score)) ranked.emplace_back(s.complete ? 0 : 1, lower_is_better ? s.score : -s.score, s.trial);
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<int> order;
  for (const auto& r : ranked) order.push_back(std::get<2>(r));
  return order;
}

std::vector<int> promote(const std::vector<RungScore>& scores, bool lower_is_better, std::int64_t eta) {
  std::vector<int> order = rank_rung(scores, lower_is_better);
  const auto n = static_cast<std::int64_t>(scores.size());
  const auto keep = static_cast<std::size_t>((n + eta - 1) / eta);
  if (order.size() > keep) order.resize(keep);
  return order;
}

boost::json::object rung_record(int rung, std::int64_t epochs, const std::vector<RungScore>& scores) {
  boost::json::array trials;
  for (const auto& s : scores) {
    trials.push_back(boost::json::object{{"trial", s.trial},
                                         {"score", std::isfinite(s.score) ? boost::json::value(s.score) : nullptr},
                                         {"complete", s.complete}});
  }
  return boost::json::object{{"rung", rung}, {"epochs", epochs}, {"trials", trials}};
}

}  // namespace hpctrain
