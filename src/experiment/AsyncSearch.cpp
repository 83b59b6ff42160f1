#include "experiment/AsyncSearch.hpp"

#include <algorithm>
#include <cmath>

#include "util/Error.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

bool same_task(const SearchTask& a, const SearchTask& b) {
  return a.trial == b.trial && a.rung == b.rung && a.split == b.split;
}

SearchTask task_of(const json::object& e, std::size_t i) {
  try {
    SearchTask t;
    t.trial = e.at("trial").to_number<int>();
    t.rung = e.at("rung").to_number<int>();
    t.split = e.at("split").to_number<std::size_t>();
    return t;
  } catch (const std::exception&) {
    throw DataError("tasks/events.jsonl: event " + std::to_string(i) + " lacks trial, rung or split");
  }
}

}  // namespace

AsyncSearch::AsyncSearch(AsyncSearchSetup setup) : setup_(std::move(setup)) {
  if (setup_.method == "asha") {
    trials_ = setup_.trials;
    std::vector<int> order;
    for (std::size_t t = 0; t < trials_.size(); ++t) order.push_back(static_cast<int>(t));
    ladder_.emplace(order, setup_.epochs, setup_.eta, setup_.lower_is_better);
  }
}

json::object AsyncSearch::event(const char* kind, const SearchTask& task) {
  return json::object{
      {"event", kind}, {"trial", task.trial}, {"rung", task.rung}, {"split", static_cast<std::int64_t>(task.split)}};
}

bool AsyncSearch::start_trial() {
  SearchTask t;
  if (ladder_) {
    const std::optional<AshaJob> job = ladder_->next();
    if (!job) return false;
    t.trial = job->trial;
    t.rung = job->rung;
    t.epochs = ladder_->epochs(job->rung);
  } else {
    if (static_cast<std::int64_t>(trials_.size()) >= setup_.tpe_trials) return false;
    Trial trial;
    trial.id = static_cast<int>(trials_.size());
    trial.assignments = tpe_propose(setup_.space, finished_, setup_.tpe, setup_.seed, trial.id);
    seen_.push_back(finished_.size());
    trials_.push_back(std::move(trial));
    t.trial = trials_.back().id;
  }
  for (std::size_t s = 0; s < setup_.split_count; ++s) {
    t.split = s;
    queue_.push_back(t);
  }
  return true;
}

AsyncSearch::Next AsyncSearch::next(SearchTask& task) {
  if (stopped_) return Next::Done;
  if (queue_.empty() && !start_trial()) return running_.empty() ? Next::Done : Next::Wait;
  task = queue_.front();
  queue_.erase(queue_.begin());
  running_.push_back(task);
  record("start", task);
  return Next::Task;
}

void AsyncSearch::arrive(const SearchTask& task, const TaskOutcome& outcome) {
  const auto it =
      std::find_if(running_.begin(), running_.end(), [&](const SearchTask& r) { return same_task(r, task); });
  if (it == running_.end()) return;  // not handed out (cannot happen): no result
  running_.erase(it);
  record("result", task);
  auto& got = partial_[{task.trial, task.rung}];
  got.push_back(outcome);
  got.back().predictions.reset();
  if (got.size() < setup_.split_count) return;
  const RungScore score = score_rung({task.trial}, got, setup_.metric, setup_.split_count).front();
  partial_.erase({task.trial, task.rung});
  scored_.emplace_back(task.rung, score);
  if (ladder_) {
    ladder_->report(task.rung, score);
  } else if (!std::isnan(score.score)) {  // a failed trial has none; an infinite one ranks as Optuna ranks it
    const double loss = setup_.lower_is_better ? score.score : -score.score;
    const auto at = std::upper_bound(finished_.begin(), finished_.end(), task.trial,
                                     [](std::int64_t t, const TpeObservation& o) { return t < o.trial; });
    finished_.insert(at,
                     TpeObservation{trials_.at(static_cast<std::size_t>(task.trial)).assignments, loss, task.trial});
  }
}

void AsyncSearch::resume() {
  queue_.insert(queue_.begin(), running_.begin(), running_.end());
  running_.clear();
  events_.push_back(json::object{{"event", "resume"}});
}

std::size_t AsyncSearch::replay(const json::array& events,
                                const std::function<const TaskOutcome*(const SearchTask&)>& find) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    const json::object* e = events[i].if_object();
    const json::string* kind = e ? e->at("event").if_string() : nullptr;
    if (kind && *kind == "resume") {
      resume();
    } else if (kind && *kind == "start") {
      const SearchTask want = task_of(*e, i);
      SearchTask got;
      if (next(got) != Next::Task || !same_task(got, want)) {
        throw DataError("tasks/events.jsonl: event " + std::to_string(i) +
                        " does not replay (the search would start another task there); use "
                        "checkpoint.resume=none to start over");
      }
    } else if (kind && *kind == "result") {
      const SearchTask t = task_of(*e, i);
      const TaskOutcome* outcome = find(t);
      if (!outcome) return i;
      arrive(t, *outcome);
    } else {
      throw DataError("tasks/events.jsonl: event " + std::to_string(i) + " is not start, result or resume");
    }
  }
  return events.size();
}

json::array AsyncSearch::rungs_record() const {
  json::array rungs;
  if (!ladder_) return rungs;
  for (int r = 0; r < ladder_->rung_count(); ++r) {
    if (ladder_->results(r).empty()) continue;
    rungs.push_back(rung_record(r, ladder_->epochs(r), ladder_->results(r)));
  }
  return rungs;
}

json::array AsyncSearch::promotions_record() const {
  json::array out;
  if (!ladder_) return out;
  for (const auto& p : ladder_->promotions()) {
    out.push_back(json::object{
        {"trial", p.trial}, {"from_rung", p.to_rung - 1}, {"to_rung", p.to_rung}, {"rung_results", p.rung_results}});
  }
  return out;
}

json::array AsyncSearch::proposals_record() const {
  json::array out;
  for (std::size_t t = 0; t < seen_.size(); ++t) {
    out.push_back(
        json::object{{"trial", t},
                     {"results_seen", seen_[t]},
                     {"startup", static_cast<std::int64_t>(seen_[t]) < std::max<std::int64_t>(setup_.tpe.startup, 1)}});
  }
  return out;
}

}  // namespace hpctrain
