// Searches that decide each task when a group frees up (search.method asha and tpe): rank 0
// runs AsyncSearch behind the scheduler's dynamic hand-out, sends each group a task spec
// (trial, rung, split, epochs and the trial's assignments, so no other rank needs the
// trial list), records every hand-out and result in RUN_DIR/tasks/events.jsonl, and on
// resume replays those events before anything new is decided.
#include <cmath>
#include <cstdio>

#include "data/ShardedDataset.hpp"
#include "experiment/ExperimentRun.hpp"
#include "experiment/FoldRunner.hpp"
#include "experiment/ScoringMetric.hpp"
#include "launch/Signals.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

std::string spec_text(const SearchTask& t, const json::object& assignments) {
  return compact_json(json::object{{"trial", t.trial},
                                   {"rung", t.rung},
                                   {"split", static_cast<std::int64_t>(t.split)},
                                   {"epochs", t.epochs},
                                   {"assignments", assignments}});
}

SearchTask spec_task(const json::object& spec) {
  SearchTask t;
  t.trial = spec.at("trial").to_number<int>();
  t.rung = spec.at("rung").to_number<int>();
  t.split = spec.at("split").to_number<std::size_t>();
  t.epochs = spec.at("epochs").to_number<std::int64_t>();
  return t;
}

}  // namespace

AsyncSearchSetup ExperimentRun::async_setup() const {
  AsyncSearchSetup s;
  s.method = bc_.search.method;
  s.space = parse_search_space(bc_.search.space_json);
  s.tpe_trials = bc_.search.trials;
  s.tpe =
      TpeSettings{bc_.search.tpe_startup, bc_.search.tpe_gamma, bc_.search.tpe_candidates, bc_.search.tpe_multivariate};
  for (const auto& tp : xp_.trials) s.trials.push_back(tp.trial);
  s.eta = bc_.search.halving_eta;
  s.epochs = asha_rung_epochs(bc_.search.halving_min_epochs, bc_.search.halving_eta, bc_.train.epochs);
  s.seed = static_cast<std::uint64_t>(bc_.search.seed);
  s.split_count = splits_.size();
  s.metric = metric_;
  s.lower_is_better = lower_is_better(metric_);
  return s;
}

// Rank 0: the recorded events replayed (their outcomes kept as if they had just arrived);
// the tasks they left running go out again first.
void ExperimentRun::replay_journal() {
  const json::array& recorded = journal_.events();
  if (recorded.empty()) return;
  const std::size_t n = search_->replay(recorded, [&](const SearchTask& t) {
    const auto& [repeat, fold] = split_ids_.at(t.split);
    const TaskOutcome* done = journal_.find(TaskJournal::key(t.rung, t.trial, repeat, fold));
    if (done) keep_one(*done, t.rung);
    return done;
  });
  const std::size_t again = search_->running();
  search_->resume();
  journal_.rewrite_events(search_->events());
  std::printf("resuming: %zu of %zu recorded event(s) replayed; %zu task(s) run again\n", n, recorded.size(), again);
  std::fflush(stdout);
}

// Rank 0, when a group asks for work.
Handout ExperimentRun::hand_out() {
  SearchTask t;
  switch (search_->next(t)) {
    case AsyncSearch::Next::Done:
      return Handout{Handout::Done, {}};
    case AsyncSearch::Next::Wait:
      return Handout{Handout::Wait, {}};
    case AsyncSearch::Next::Task:
      break;
  }
  journal_.append_event(search_->events().back().as_object());
  return Handout{Handout::Task, spec_text(t, search_->trials().at(static_cast<std::size_t>(t.trial)).assignments)};
}

// Every rank of the group that took the task: the trial's config from the spec, trained and
// scored. A config the schema refuses is that task's failure (the same on every rank).
std::string ExperimentRun::run_spec(const std::string& text) {
  const json::object spec = json::parse(text).as_object();
  const SearchTask t = spec_task(spec);
  FoldTask ft;
  ft.trial = t.trial;
  ft.repeat = split_ids_.at(t.split).first;
  ft.fold = split_ids_.at(t.split).second;
  ft.in_search = true;
  ft.keep_predictions = bc_.cv.save_predictions;
  TaskOutcome outcome;
  try {
    const TrialPlan tp = make_trial_plan(json::parse(base_.resolved_json).as_object(),
                                         Trial{t.trial, spec.at("assignments").as_object()}, true, xp_.use_cv);
    ft.epochs = t.epochs > 0 ? t.epochs : tp.config.train.epochs;
    outcome = run_fold_task(ft, tp.config, *data_, splits_.at(t.split), *grid_, *scheduler_, scheduler_->group_index());
  } catch (const ConfigError& e) {
    outcome.trial = ft.trial;
    outcome.repeat = ft.repeat;
    outcome.fold = ft.fold;
    outcome.epochs = ft.epochs;
    outcome.group = scheduler_->group_index();
    outcome.ranks = scheduler_->group().size();
    outcome.status = TaskStatus::Failed;
    outcome.error = e.what();
  }
  return scheduler_->leader() ? to_json_text(outcome) : std::string();
}

// Rank 0, as each outcome arrives: recorded, kept for the reports and passed to the search.
void ExperimentRun::take_outcome(const std::string& spec, const std::string& text) {
  const SearchTask t = spec_task(json::parse(spec).as_object());
  TaskOutcome outcome = parse_task_outcome(text);
  if (outcome.status == TaskStatus::Preempted) {
    ++preempted_;
    search_->stop();  // nothing more starts; what finished is recorded
    return;
  }
  const auto& [repeat, fold] = split_ids_.at(t.split);
  journal_.record(TaskJournal::key(t.rung, t.trial, repeat, fold), outcome, text);
  search_->arrive(t, outcome);
  journal_.append_event(search_->events().back().as_object());
  keep_one(std::move(outcome), t.rung);
}

void ExperimentRun::run_async() {
  if (root_) {
    search_ = std::make_unique<AsyncSearch>(async_setup());
    replay_journal();
  }
  scheduler_->run_dynamic([&](int) { return hand_out(); }, [&](const std::string& spec) { return run_spec(spec); },
                          [&](const std::string& spec, const std::string& text) { take_outcome(spec, text); });
  std::int32_t preempted = preempted_;
  world_.broadcast(&preempted, sizeof(preempted), 0);
  if (preempted > 0) {
    throw CollectiveError("preempted: " + std::to_string(preempted) + " task(s) stopped; the finished ones are " +
                              "recorded in " + run_dir_ + "/tasks; run again with checkpoint.resume=auto to go on",
                          0, kPreemptedExitCode);
  }
  if (!root_) return;
  // The trials as the search made them (tpe proposes them as it goes), and their standings.
  const json::object base_json = json::parse(base_.resolved_json).as_object();
  if (bc_.search.method == "tpe") {
    xp_.trials.clear();
    for (const auto& t : search_->trials()) {
      try {
        xp_.trials.push_back(make_trial_plan(base_json, t, true, xp_.use_cv));
      } catch (const ConfigError&) {  // its tasks failed with this error; the report still lists it
        xp_.trials.push_back(TrialPlan{t, bc_, trial_config(base_json, t.assignments)});
      }
    }
  }
  members_.clear();
  for (std::size_t t = 0; t < xp_.trials.size(); ++t) members_.push_back(static_cast<int>(t));
  standings_.assign(xp_.trials.size(), TrialStanding{});
  for (const auto& [rung, score] : search_->scored()) update_standings({score}, rung, standings_);
  rungs_ = search_->rungs_record();
  if (bc_.search.method == "asha") {
    schedule_["promotions"] = search_->promotions_record();
    std::printf("asha: %zu promotion(s) over %d rung(s)\n", search_->promotions_record().size(),
                static_cast<int>(rungs_.size()));
  } else {
    schedule_["proposals"] = search_->proposals_record();
  }
  schedule_["events"] = search_->events();
  std::fflush(stdout);
}

}  // namespace hpctrain
