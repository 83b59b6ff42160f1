// A whole cross-validation or search on every rank: the plan, the data and its splits, the
// rounds of tasks over the groups (successive halving runs several), and rank 0's reports.
// What each step computes lives in its own file (ExperimentPlan, Journal, Halving, Reports);
// this one orders them and carries rank 0's decisions to the other ranks.
#include "experiment/Experiment.hpp"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "data/ShardedDataset.hpp"
#include "experiment/ExperimentRun.hpp"
#include "experiment/FoldRunner.hpp"
#include "experiment/Halving.hpp"
#include "experiment/ScoringMetric.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "launch/Signals.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// Rank 0's list (task indices, trial indices) on every rank: its length, then its items.
void broadcast_ints(const Communicator& world, std::vector<std::int32_t>& values) {
  std::int64_t count = static_cast<std::int64_t>(values.size());
  world.broadcast(&count, sizeof(count), 0);
  values.resize(static_cast<std::size_t>(count));
  if (count > 0) world.broadcast(values.data(), values.size() * sizeof(std::int32_t), 0);
}

void broadcast_decision(const Communicator& world, RoundDecision& d) {
  std::vector<std::int32_t> wire{d.preempted, d.stop ? 1 : 0};
  wire.insert(wire.end(), d.promoted.begin(), d.promoted.end());
  broadcast_ints(world, wire);
  d.preempted = wire.at(0);
  d.stop = wire.at(1) != 0;
  d.promoted.assign(wire.begin() + 2, wire.end());
}

}  // namespace

// Everything up to the data is the same computation on every rank, so a bad setting throws
// the same ConfigError everywhere; collective_check only adds agreement.
void ExperimentRun::load() {
  collective_check(world_, [&] {
    xp_ = plan_experiment(base_);
    scheduler_ = std::make_unique<GroupScheduler>(world_, static_cast<int>(bc_.cv.ranks_per_group));
  });
  // Each group is a grid of pipeline stages x data-parallel replicas (cv.ranks_per_group =
  // stages x replicas); its replicas hold the whole training split, each replica's stages
  // the same shard.
  collective_check(world_, [&] {
    grid_ = std::make_unique<ProcessGrid>(scheduler_->group(), static_cast<int>(bc_.parallel.pipeline_stages),
                                          parse_grid_order(bc_.parallel.grid_order), "cv.ranks_per_group");
  });
  collective_check(world_, [&] {
    data_ = std::make_unique<ShardedDataset>(
        ShardedDataset::load_shards(bc_.data, static_cast<std::uint64_t>(bc_.train.seed), grid_->data()));
  });
  classification_ = data_->classification();
  const std::vector<std::int32_t> labels = data_->all_train_labels(grid_->data());
  collective_check(world_, [&] {
    metric_ = resolve_search_metric(bc_.search.metric, classification_);
    make_splits(labels);
  });
}

// The splits every trial is scored on: identical folds for every trial.
void ExperimentRun::make_splits(const std::vector<std::int32_t>& labels) {
  const std::int64_t n = data_->available_train();
  if (!xp_.use_cv) {
    splits_.push_back(split_train_validation(n, bc_.data.val_fraction, static_cast<std::uint64_t>(bc_.train.seed)));
    if (splits_.back().validation.empty()) {
      throw ConfigError("search.scoring: holdout scoring needs data.val_fraction > 0 (or use cv scoring)");
    }
    split_ids_.emplace_back(0, -1);
    return;
  }
  // Series windows are in time order: shuffled folds would train on the future of what
  // they hold out.
  const bool time_ordered = bc_.cv.scheme == "time" || (bc_.cv.scheme == "auto" && data_->meta().series);
  if (time_ordered && bc_.cv.repeats > 1) {
    throw ConfigError("cv.repeats: time-ordered folds (cv.scheme=" + bc_.cv.scheme +
                      (bc_.cv.scheme == "auto" ? ", series data" : "") +
                      ") are one fixed split; set cv.repeats=1, or cv.scheme=kfold for shuffled folds");
  }
  folds_ = time_ordered ? make_time_fold_plan(n, static_cast<int>(bc_.cv.folds), data_->meta().series_reach)
                        : make_fold_plan(n, labels, static_cast<int>(bc_.cv.folds), static_cast<int>(bc_.cv.repeats),
                                         bc_.cv.stratified && classification_, static_cast<std::uint64_t>(bc_.cv.seed));
  for (const auto& f : folds_.folds) {
    splits_.push_back(TrainValSplit{f.train, f.held_out});
    split_ids_.emplace_back(f.repeat, f.index);
  }
}

// Finished tasks are recorded in run_dir/tasks as they arrive; checkpoint.resume=auto reuses them.
void ExperimentRun::open_journal_and_announce() {
  std::size_t recorded = 0;
  collective_check(world_, [&] {
    if (root_) recorded = journal_.open(bc_.checkpoint.resume, base_.resolved_json);
  });
  if (!root_) return;
  if (recorded > 0 && !async_) {  // asha, tpe: the replay says what it reuses
    std::printf("resuming: %zu finished task(s) recorded in %s/tasks are not run again\n", recorded, run_dir_.c_str());
  }
  make_directories(run_dir_);
  if (xp_.use_cv)
    write_file_atomic(run_dir_ + "/folds.json", folds_json(folds_, bc_.cv.seed, data_->available_train()));
  const std::size_t trials =
      bc_.search.method == "tpe" ? static_cast<std::size_t>(bc_.search.trials) : xp_.trials.size();
  std::printf("%s: %zu trial(s) x %zu %s on %d group(s) of %d rank(s)\n",
              searching_ ? ("search (" + bc_.search.method + ")").c_str() : "cross-validation", trials, splits_.size(),
              xp_.use_cv ? "fold(s)" : "holdout split", scheduler_->group_count(), scheduler_->group().size());
  std::fflush(stdout);
}

std::string ExperimentRun::task_key(const RoundTask& task) const {
  const auto& [repeat, fold] = split_ids_[task.split];
  return TaskJournal::key(rung_, xp_.trials[static_cast<std::size_t>(task.trial)].trial.id, repeat, fold);
}

TaskOutcome ExperimentRun::run_task(const RoundTask& task) {
  const TrialPlan& tp = xp_.trials[static_cast<std::size_t>(task.trial)];
  FoldTask ft;
  ft.trial = tp.trial.id;
  ft.repeat = split_ids_[task.split].first;
  ft.fold = split_ids_[task.split].second;
  ft.epochs = halving_ ? epochs_ : tp.config.train.epochs;
  ft.in_search = searching_;
  ft.keep_predictions = bc_.cv.save_predictions;
  return run_fold_task(ft, tp.config, *data_, splits_[task.split], *grid_, *scheduler_, scheduler_->group_index());
}

// Runs the tasks not recorded as finished; returns every task's outcome on rank 0 (by task),
// nothing elsewhere. Outcomes travel as JSON text and are parsed once, as they arrive.
std::vector<TaskOutcome> ExperimentRun::run_round(const std::vector<RoundTask>& tasks) {
  std::vector<TaskOutcome> outcomes;
  std::vector<std::int32_t> todo;
  if (root_) {
    outcomes.resize(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      if (const TaskOutcome* done = journal_.find(task_key(tasks[i]))) {
        outcomes[i] = *done;
      } else {
        todo.push_back(static_cast<std::int32_t>(i));
      }
    }
  }
  broadcast_ints(world_, todo);
  scheduler_->run(
      static_cast<int>(todo.size()),
      [&](int j) {
        const TaskOutcome outcome = run_task(tasks[static_cast<std::size_t>(todo[static_cast<std::size_t>(j)])]);
        return scheduler_->leader() ? to_json_text(outcome) : std::string();
      },
      [&](int j, const std::string& text) {
        const auto i = static_cast<std::size_t>(todo[static_cast<std::size_t>(j)]);
        outcomes[i] = parse_task_outcome(text);
        journal_.record(task_key(tasks[i]), outcomes[i], text);
      });
  return outcomes;
}

// Rank 0: scores the round, updates the standings and, for successive halving, promotes.
RoundDecision ExperimentRun::decide(const std::vector<TaskOutcome>& outcomes) {
  RoundDecision d;
  for (const auto& o : outcomes) d.preempted += o.status == TaskStatus::Preempted ? 1 : 0;
  if (d.preempted > 0) return d;
  const std::vector<RungScore> scores = score_rung(survivors_, outcomes, metric_, splits_.size());
  update_standings(scores, rung_, standings_);
  if (!halving_) return d;
  rungs_.push_back(rung_record(rung_, epochs_, scores));
  const std::vector<int> promoted = promote(scores, lower_is_better(metric_), bc_.search.halving_eta);
  d.promoted.assign(promoted.begin(), promoted.end());
  d.stop = survivors_.size() <= 1 || epochs_ >= bc_.train.epochs || d.promoted.empty();
  std::printf("rung %d (%lld epochs): %zu trial(s), %zu go on\n", rung_, static_cast<long long>(epochs_),
              survivors_.size(), promoted.size());
  std::fflush(stdout);
  return d;
}

// Rank 0: predictions go to their files now and are not kept (a search holds many); a later
// rung's file replaces an earlier one's, so the files follow the rung each trial reached.
void ExperimentRun::keep(std::vector<TaskOutcome> outcomes) {
  if (bc_.cv.save_predictions) make_directories(run_dir_ + "/predictions");
  for (auto& o : outcomes) keep_one(std::move(o), rung_);
}

void ExperimentRun::keep_one(TaskOutcome o, int rung) {
  const std::int64_t num_classes = classification_ ? data_->meta().num_classes : 0;
  o.rung = rung;
  if (bc_.cv.save_predictions && o.ok() && o.predictions) {
    make_directories(run_dir_ + "/predictions");
    write_file_atomic(run_dir_ + "/predictions/" + predictions_file_name(o, searching_),
                      predictions_csv(*o.predictions, num_classes));
  }
  o.predictions_dropped = o.predictions.has_value();
  o.predictions.reset();
  outcomes_.push_back(std::move(o));
}

ReportHeader ExperimentRun::report_header(const OutcomeCounts& counts) const {
  const LaunchEnvironment launch = LaunchEnvironment::detect();
  json::object launch_vars;
  for (const auto& kv : launch.variables) launch_vars[kv.first] = kv.second;
  const bool cv = xp_.use_cv;
  return ReportHeader{{"task", task_name(data_->meta().task)},
                      {"data", bc_.data.path},
                      {"scoring", cv ? "cv" : "holdout"},
                      {"folds", cv ? bc_.cv.folds : 0},
                      {"repeats", cv ? bc_.cv.repeats : 0},
                      {"stratified", cv && folds_.stratified},
                      {"scheme", cv ? folds_.scheme : "holdout"},
                      {"cv_seed", bc_.cv.seed},
                      {"world_size", world_.size()},
                      {"groups", scheduler_->group_count()},
                      {"ranks_per_group", scheduler_->group().size()},
                      {"pipeline_stages", grid_->stages()},
                      {"tasks_ok", counts.ok},
                      {"tasks_failed", counts.failed},
                      {"shards", bc_.search.shards},
                      {"shard", bc_.search.shard},
                      {"launcher", launch.launcher},
                      {"slurm_job", launch.slurm_job_tag()},
                      {"launch_environment", launch_vars},
                      {"wall_seconds", wall_seconds() - start_}};
}

// Rank 0 writes the reports; every rank returns the chosen config.
ExperimentResult ExperimentRun::write_reports() {
  ExperimentResult result;
  std::string chosen;
  if (root_) {
    const OutcomeCounts counts = count_outcomes(outcomes_);
    result.any_ok = counts.ok > 0;
    if (!searching_) {
      CvReportInput in;
      in.config = &bc_;
      in.classification = classification_;
      in.stratified = folds_.stratified;
      in.scheme = folds_.scheme;
      in.gap = folds_.gap;
      in.world_size = world_.size();
      in.groups = scheduler_->group_count();
      in.ranks_per_group = scheduler_->group().size();
      in.header = report_header(counts);
      in.wall_seconds = wall_seconds() - start_;
      const CvReports reports = render_cv_reports(in, outcomes_, standings_.front().summary);
      write_cv_reports(run_dir_, reports);
      chosen = pretty_json(xp_.trials.front().config_json);
      result.summary_text = reports.summary_md;
    } else {
      SearchReportInput in;
      in.method = bc_.search.method;
      in.metric = metric_;
      in.lower_is_better = lower_is_better(metric_);
      in.use_cv = xp_.use_cv;
      in.folds = bc_.cv.folds;
      in.halving = halving_ || bc_.search.method == "asha";
      in.header = report_header(counts);
      in.rungs = rungs_;
      in.schedule = schedule_;
      const SearchReports reports = render_search_reports(in, xp_.trials, members_, outcomes_, standings_);
      write_search_reports(run_dir_, reports);
      chosen = reports.best_config_json;
      result.summary_text = reports.leaderboard_md;
    }
  }
  world_.broadcast(chosen, 0);
  int any = result.any_ok ? 1 : 0;
  world_.broadcast(&any, sizeof(any), 0);
  result.any_ok = any != 0;
  result.chosen_config = chosen;
  return result;
}

ExperimentResult ExperimentRun::run() {
  load();
  open_journal_and_announce();
  members_ = shard_members(xp_, bc_.search.shards, bc_.search.shard);
  survivors_ = members_;
  epochs_ = halving_ ? std::min(bc_.search.halving_min_epochs, bc_.train.epochs) : 0;
  if (root_) standings_.assign(xp_.trials.size(), TrialStanding{});
  if (async_) {
    run_async();
    return write_reports();
  }
  while (true) {
    std::vector<RoundTask> tasks;
    for (int t : survivors_) {
      for (std::size_t s = 0; s < splits_.size(); ++s) tasks.push_back(RoundTask{t, s});
    }
    std::vector<TaskOutcome> outcomes = run_round(tasks);
    RoundDecision decision;
    if (root_) decision = decide(outcomes);
    broadcast_decision(world_, decision);
    // A preemption signal stopped tasks: what finished is recorded; end with exit code 75.
    if (decision.preempted > 0) {
      throw CollectiveError(
          "preempted: " + std::to_string(tasks.size() - static_cast<std::size_t>(decision.preempted)) + " of " +
              std::to_string(tasks.size()) + " task(s) of this round finished, recorded in " + run_dir_ +
              "/tasks; run again with checkpoint.resume=auto to go on",
          0, kPreemptedExitCode);
    }
    if (root_) keep(std::move(outcomes));
    if (decision.stop) break;
    survivors_.assign(decision.promoted.begin(), decision.promoted.end());
    epochs_ = std::min(epochs_ * bc_.search.halving_eta, bc_.train.epochs);
    ++rung_;
  }
  return write_reports();
}

ExperimentResult run_experiment(const ResolvedConfig& base, const Communicator& world, const std::string& run_dir) {
  return ExperimentRun(base, world, run_dir).run();
}

}  // namespace hpctrain
