#include "experiment/Experiment.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "experiment/FoldPlan.hpp"
#include "experiment/FoldRunner.hpp"
#include "experiment/GroupScheduler.hpp"
#include "data/ShardedDataset.hpp"
#include "eval/Scores.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "launch/Signals.hpp"
#include "util/Files.hpp"
#include "util/SystemStats.hpp"
#include "experiment/SearchSpace.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

struct TrialPlan {
  Trial trial;
  Config config;
  json::object config_json;
};

struct ExperimentPlan {
  std::vector<TrialPlan> trials;
  bool use_cv = false;
  std::size_t split_count = 1;  // folds x repeats, or the one holdout split
};

bool lower_is_better(const std::string& metric) {
  return metric == "loss" || metric == "mse" || metric == "rmse" || metric == "mae";
}

double as_double(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return std::nan("");
}

// Summary of one trial's successful outcomes: every scalar metric, time and throughput.
json::object summarize_trial(const std::vector<const json::object*>& ok) {
  std::map<std::string, std::vector<double>> columns;
  for (const auto* o : ok) {
    for (const auto& kv : o->at("metrics").as_object()) {
      if (kv.value().is_number() && kv.key() != "count")
        columns[std::string(kv.key())].push_back(as_double(kv.value()));
    }
    columns["train_seconds"].push_back(as_double(o->at("train_seconds")));
    columns["samples_per_s"].push_back(as_double(o->at("samples_per_s")));
  }
  json::object out;
  for (const auto& [name, values] : columns) out[name] = to_json(summarize(values));
  return out;
}

std::string fmt(double v, const char* format = "%.4f") {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

// One field ("mean", "std", "n") of a metric's summary; NaN when absent or null.
double summary_field(const json::object& summary, const std::string& metric, const char* field) {
  auto it = summary.find(metric);
  if (it == summary.end() || !it->value().is_object()) return std::nan("");
  const auto& v = it->value().as_object().at(field);
  return v.is_null() ? std::nan("") : as_double(v);
}
double summary_mean(const json::object& summary, const std::string& metric) {
  return summary_field(summary, metric, "mean");
}
double summary_std(const json::object& summary, const std::string& metric) {
  return summary_field(summary, metric, "std");
}

void write_predictions_csv(const std::string& path, const json::object& outcome, std::int64_t num_classes) {
  const auto& p = outcome.at("predictions").as_object();
  const auto& index = p.at("index").as_array();
  const auto& target = p.at("target").as_array();
  const auto& loss = p.at("loss").as_array();
  const auto& outputs = p.at("outputs").as_array();
  std::ostringstream out;
  out.precision(17);
  if (num_classes > 0) {
    out << "index,label,prediction,loss";
    for (std::int64_t c = 0; c < num_classes; ++c) out << ",score_" << c;
    out << "\n";
    for (std::size_t i = 0; i < index.size(); ++i) {
      std::int64_t best = 0;
      const std::size_t base = i * static_cast<std::size_t>(num_classes);
      for (std::int64_t c = 1; c < num_classes; ++c) {
        if (as_double(outputs[base + c]) > as_double(outputs[base + best])) best = c;
      }
      out << index[i].as_int64() << "," << static_cast<std::int64_t>(as_double(target[i])) << "," << best << ","
          << as_double(loss[i]);
      for (std::int64_t c = 0; c < num_classes; ++c) out << "," << as_double(outputs[base + c]);
      out << "\n";
    }
  } else {
    // S target values per sample (targets [N, S]): S target and S prediction columns.
    const std::size_t width = index.empty() ? 1 : std::max<std::size_t>(1, target.size() / index.size());
    auto suffix = [&](std::size_t s) { return width > 1 ? "_" + std::to_string(s + 1) : std::string(); };
    out << "index";
    for (std::size_t s = 0; s < width; ++s) out << ",target" << suffix(s);
    for (std::size_t s = 0; s < width; ++s) out << ",prediction" << suffix(s);
    out << ",loss\n";
    for (std::size_t i = 0; i < index.size(); ++i) {
      out << index[i].as_int64();
      for (std::size_t s = 0; s < width; ++s) out << "," << as_double(target[i * width + s]);
      for (std::size_t s = 0; s < width; ++s) out << "," << as_double(outputs[i * width + s]);
      out << "," << as_double(loss[i]) << "\n";
    }
  }
  write_file_atomic(path, out.str());
}

std::string fold_name(const json::object& o) {
  const auto fold = o.at("fold").as_int64();
  if (fold < 0) return "holdout";
  return "repeat" + std::to_string(o.at("repeat").as_int64()) + "_fold" + std::to_string(fold);
}

// Rank 0's record of an experiment's finished tasks, one file each in RUN_DIR/tasks, so a
// preempted (or killed) cross-validation or search resumes without running them again.
class TaskJournal {
 public:
  explicit TaskJournal(std::string dir) : dir_(std::move(dir)) {}

  // checkpoint.resume none: start a fresh record; auto: reuse one made for the same config
  // (all but the run, checkpoint, device, comm and precision sections). Returns the number
  // of tasks loaded.
  std::size_t open(const std::string& mode, const std::string& resolved_json) {
    namespace fs = std::filesystem;
    json::object config = json::parse(resolved_json).as_object();
    // Where and in what precision tasks run may change between a job and its requeue (as
    // for a checkpoint's resume); what they compute may not.
    for (const char* section : {"run", "checkpoint", "device", "comm", "precision"}) config.erase(section);
    const std::string identity = pretty_json(config);
    const std::string identity_path = dir_ + "/config.json";
    if (mode != "none" && mode != "auto") {
      throw ConfigError(
          "checkpoint.resume: a cross-validation or search resumes from the tasks recorded in its run "
          "directory; use auto (or none to start over)");
    }
    if (mode == "auto" && fs::is_regular_file(identity_path)) {
      if (read_file(identity_path) != identity) {
        throw ConfigError(dir_ +
                          ": holds the finished tasks of a different config; use another run.dir, or "
                          "checkpoint.resume=none to start over");
      }
      for (const auto& entry : fs::directory_iterator(dir_)) {
        const std::string name = entry.path().filename().string();
        if (name == "config.json" || entry.path().extension() != ".json") continue;
        try {
          const std::string text = read_file(entry.path().string());
          const auto status = json::parse(text).as_object().at("status");
          if (status == "ok" || status == "failed") done_[entry.path().stem().string()] = text;
        } catch (const std::exception&) {
          // A file cut short by a crash: its task runs again.
        }
      }
      return done_.size();
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
    make_directories(dir_);
    write_file_atomic(identity_path, identity);
    return 0;
  }

  static std::string key(int rung, int trial, int repeat, int fold) {
    return "rung" + std::to_string(rung) + "_trial" + std::to_string(trial) + "_" +
           (fold < 0 ? std::string("holdout") : "repeat" + std::to_string(repeat) + "_fold" + std::to_string(fold));
  }
  const std::string* find(const std::string& key) const {
    auto it = done_.find(key);
    return it == done_.end() ? nullptr : &it->second;
  }
  // Rank 0, as each outcome arrives; a preempted task is not a result.
  void record(const std::string& key, const std::string& outcome) {
    if (json::parse(outcome).as_object().at("status") == "preempted") return;
    write_file_atomic(dir_ + "/" + key + ".json", outcome);
  }

 private:
  std::string dir_;
  std::map<std::string, std::string> done_;
};

struct SearchReport {
  const Config* bc;
  const std::vector<TrialPlan>* trials;
  std::vector<int> members;  // the trials reported on (a shard's, or all)
  json::array outcome_rows;  // every task's outcome
  std::vector<json::object> last_summary;
  std::vector<int> reached;
  std::vector<char> incomplete;
  std::string metric;
  bool use_cv = false;
  bool halving = false;
  json::object common;
  json::array rungs;
  std::string run_dir;
};

// Writes the search's leaderboard (search_report.json, leaderboard.csv/.md, best_config.json)
// into in.run_dir; returns the Markdown and sets `chosen` to the best trial's config.
std::string write_search_reports(const SearchReport& in, std::string& chosen) {
  const Config& bc = *in.bc;
  const std::vector<TrialPlan>& trials = *in.trials;
  const json::array& outcome_rows = in.outcome_rows;
  const auto& last_summary = in.last_summary;
  const auto& reached = in.reached;
  const auto& incomplete = in.incomplete;
  const std::string& metric = in.metric;
  const bool use_cv = in.use_cv;
  const std::string& run_dir = in.run_dir;
  // Best trial: highest rung reached, then the metric.
  std::vector<std::pair<std::tuple<int, int, double>, int>> order;
  for (int m : in.members) {
    const auto t = static_cast<std::size_t>(m);
    const double s = summary_mean(last_summary[t], metric);
    const double key = std::isfinite(s) ? (lower_is_better(metric) ? s : -s) : INFINITY;
    order.push_back({{-reached[t], incomplete[t] ? 1 : 0, key}, m});
  }
  std::sort(order.begin(), order.end());
  const int best = order.empty() ? 0 : order.front().second;
  chosen = pretty_json(trials[static_cast<std::size_t>(best)].config_json);
  std::ostringstream md;
  json::array board;
  std::ostringstream csv;
  csv.precision(10);
  csv << "rank,trial,parameters," << metric << "_mean," << metric
      << "_std,rung,epochs,folds_ok,folds_failed,train_seconds,samples_per_s,model_parameters,status\n";
  md << "# Search leaderboard: " << bc.search.method << " search, metric `" << metric << "` ("
     << (lower_is_better(metric) ? "lower" : "higher") << " is better), "
     << (use_cv ? std::to_string(bc.cv.folds) + "-fold cross-validation" : std::string("holdout")) << "\n\n"
     << "| rank | trial | parameters | " << metric << " | rung | time (s) | samples/s | model parameters | status |\n"
     << "|---|---|---|---|---|---|---|---|---|\n";
  std::ostringstream failures;
  int position = 0;
  for (const auto& [key, t] : order) {
    ++position;
    const auto& tp = trials[static_cast<std::size_t>(t)];
    const auto& summary = last_summary[static_cast<std::size_t>(t)];
    int ok_count = 0, fail_count = 0;
    std::int64_t parameters = 0;
    std::int64_t trial_epochs = 0;
    std::string first_error;
    int failed_later = -1;
    for (const auto& v : outcome_rows) {
      const auto& o = v.as_object();
      if (o.at("trial").as_int64() != tp.trial.id) continue;
      if (o.at("status").as_string() != "ok" && first_error.empty()) {
        first_error = std::string(o.at("error").as_string());
      }
      if (o.at("status").as_string() != "ok" && o.at("rung").as_int64() > reached[t]) {
        failed_later = static_cast<int>(o.at("rung").as_int64());
      }
      if (o.at("rung").as_int64() != reached[t]) continue;
      trial_epochs = o.at("epochs").as_int64();
      if (o.at("status").as_string() == "ok") {
        ++ok_count;
        parameters = o.at("parameters").as_int64();
      } else {
        ++fail_count;
      }
    }
    const double mean = summary_mean(summary, metric), sd = summary_std(summary, metric);
    const std::string params = describe_assignments(tp.trial.assignments);
    board.push_back(json::object{{"rank", position},
                                 {"trial", tp.trial.id},
                                 {"parameters", tp.trial.assignments},
                                 {"metric", metric},
                                 {"mean", std::isfinite(mean) ? json::value(mean) : nullptr},
                                 {"std", std::isfinite(sd) ? json::value(sd) : nullptr},
                                 {"rung", reached[t]},
                                 {"epochs", trial_epochs},
                                 {"folds_ok", ok_count},
                                 {"folds_failed", fail_count},
                                 {"summary", summary},
                                 {"model_parameters", parameters}});
    std::string status = ok_count == 0    ? "failed"
                         : fail_count > 0 ? "incomplete (" + std::to_string(ok_count) + " of " +
                                                std::to_string(ok_count + fail_count) + " folds)"
                                          : "ok";
    if (failed_later >= 0) status += ", failed at rung " + std::to_string(failed_later);
    if (!first_error.empty()) failures << "- trial " << tp.trial.id << ": " << first_error << "\n";
    board.back().as_object()["status"] = status;
    std::string quoted;  // RFC 4180: quotes inside a quoted field are doubled
    for (char ch : params) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    csv << position << "," << tp.trial.id << ",\"" << quoted << "\"," << (std::isfinite(mean) ? fmt(mean, "%.6f") : "")
        << "," << (std::isfinite(sd) ? fmt(sd, "%.6f") : "") << "," << reached[t] << "," << trial_epochs << ","
        << ok_count << "," << fail_count << "," << fmt(summary_mean(summary, "train_seconds"), "%.3f") << ","
        << fmt(summary_mean(summary, "samples_per_s"), "%.1f") << "," << parameters << ",\"" << status << "\"\n";
    md << "| " << position << " | " << tp.trial.id << " | `" << params << "` | " << fmt(mean)
       << (std::isfinite(sd) ? " ± " + fmt(sd) : std::string()) << " | " << reached[t] << " | "
       << fmt(summary_mean(summary, "train_seconds"), "%.1f") << " | "
       << fmt(summary_mean(summary, "samples_per_s"), "%.0f") << " | " << parameters << " | " << status << " |\n";
  }
  if (!failures.str().empty()) md << "\nFailures (the first error of each trial):\n\n" << failures.str();
  json::object report{{"format", "hpctrain-search-report"}, {"format_version", 1}};
  for (const auto& kv : in.common) report[kv.key()] = kv.value();
  report["method"] = bc.search.method;
  report["metric"] = metric;
  report["lower_is_better"] = lower_is_better(metric);
  report["leaderboard"] = board;
  if (in.halving) report["rungs"] = in.rungs;
  report["tasks"] = outcome_rows;
  report["best_trial"] = trials[static_cast<std::size_t>(best)].trial.id;
  write_file_atomic(run_dir + "/search_report.json", pretty_json(report));
  write_file_atomic(run_dir + "/leaderboard.csv", csv.str());
  write_file_atomic(run_dir + "/leaderboard.md", md.str());
  write_file_atomic(run_dir + "/best_config.json", chosen);
  return md.str();
}

// The trials of an experiment and how they are scored: the same computation on every rank
// (and in search-merge), so a bad setting throws the same ConfigError everywhere.
ExperimentPlan plan_experiment(const ResolvedConfig& base) {
  const Config& bc = base.config;
  ExperimentPlan p;
  const bool searching = bc.search.method != "none";
  p.use_cv = !searching || bc.search.scoring == "cv" || (bc.search.scoring == "auto" && bc.cv.folds >= 2);
  if (p.use_cv && bc.cv.folds < 2) {
    throw ConfigError(searching ? "search.scoring: cv scoring needs cv.folds >= 2"
                                : "cv.folds: cross-validation needs at least 2 folds");
  }
  if (p.use_cv && bc.train.early_stop_patience > 0) {
    throw ConfigError(
        "train.early_stop_patience: early stopping would select epochs on the held-out fold; turn it off for "
        "cross-validation");
  }
  const json::object base_json = json::parse(base.resolved_json).as_object();
  std::vector<Trial> drawn;
  if (!searching) {
    drawn.push_back(Trial{});
  } else {
    const SearchSpace space = parse_search_space(bc.search.space_json);
    for (const auto& d : space.dimensions) {
      // Every trial is scored on the same rows: the data and the split stay those of CONFIG.
      if (d.key == "data" || d.key == "data.val_fraction") {
        throw ConfigError("search.space." + d.key + ": every trial is scored on the same split of the same data");
      }
      if (d.key == "train" || (bc.search.method == "halving" && d.key == "train.epochs")) {
        throw ConfigError("search.space." + d.key +
                          ": successive halving sets the epochs of each rung (search.halving_min_epochs, "
                          "train.epochs); search other train keys one by one");
      }
    }
    if (bc.search.method == "grid") {
      drawn = grid_trials(space);
    } else if (bc.search.method == "random") {
      drawn = random_trials(space, bc.search.trials, static_cast<std::uint64_t>(bc.search.seed));
    } else {
      drawn = space.is_grid() ? grid_trials(space)
                              : random_trials(space, bc.search.trials, static_cast<std::uint64_t>(bc.search.seed));
    }
  }
  for (auto& t : drawn) {
    TrialPlan plan;
    plan.config_json = trial_config(base_json, t.assignments);
    const std::string origin =
        searching ? "search trial " + std::to_string(t.id) + " (" + describe_assignments(t.assignments) + ")"
                  : "config";
    plan.config = parse_config(compact_json(plan.config_json), origin, {}).config;
    if (p.use_cv && plan.config.train.early_stop_patience > 0) {
      throw ConfigError(origin +
                        ": train.early_stop_patience: early stopping would select epochs on the held-out "
                        "fold; turn it off for cross-validation");
    }
    plan.trial = std::move(t);
    p.trials.push_back(std::move(plan));
  }
  if (bc.search.shard >= bc.search.shards) {
    throw ConfigError("search.shard: " + std::to_string(bc.search.shard) + " is not below search.shards (" +
                      std::to_string(bc.search.shards) + ")");
  }
  if (bc.search.shards > 1) {
    if (!searching) throw ConfigError("search.shards: only a search (search.method) splits into shards");
    if (bc.search.method == "halving") {
      throw ConfigError(
          "search.shards: successive halving ranks every trial between rungs, so it runs as one job; split grid "
          "or random searches");
    }
    if (static_cast<std::int64_t>(p.trials.size()) <= bc.search.shard) {
      throw ConfigError("search.shard: shard " + std::to_string(bc.search.shard) + " of " +
                        std::to_string(bc.search.shards) + " has no trials (the search has " +
                        std::to_string(p.trials.size()) + ")");
    }
  }
  p.split_count = p.use_cv ? static_cast<std::size_t>(bc.cv.folds * bc.cv.repeats) : 1;
  return p;
}

}  // namespace

ExperimentResult run_experiment(const ResolvedConfig& base, const Communicator& world, const std::string& run_dir) {
  const Config& bc = base.config;
  const bool root = world.rank() == 0;
  const bool searching = bc.search.method != "none";
  const double start = wall_seconds();

  // Everything below up to the data is the same computation on every rank, so a bad
  // setting throws the same ConfigError everywhere; collective_check only adds agreement.
  ExperimentPlan xp;
  std::unique_ptr<GroupScheduler> scheduler;
  collective_check(world, [&] {
    xp = plan_experiment(base);
    scheduler = std::make_unique<GroupScheduler>(world, static_cast<int>(bc.cv.ranks_per_group));
  });
  const std::vector<TrialPlan>& trials = xp.trials;
  const bool use_cv = xp.use_cv;
  const Communicator& group = scheduler->group();

  // Each group holds the whole training split across its ranks.
  std::unique_ptr<ShardedDataset> data;
  collective_check(world, [&] {
    data = std::make_unique<ShardedDataset>(
        ShardedDataset::load_shards(bc.data, static_cast<std::uint64_t>(bc.train.seed), group));
  });
  const bool classification = data->classification();
  const std::int64_t n = data->available_train();
  std::string metric = bc.search.metric;
  if (metric == "auto") metric = classification ? "accuracy" : "rmse";

  // The splits every trial is scored on: identical folds for every trial.
  std::vector<TrainValSplit> splits;
  std::vector<std::pair<int, int>> split_ids;  // (repeat, fold)
  FoldPlan plan;
  const std::vector<std::int32_t> labels = data->all_train_labels(group);
  collective_check(world, [&] {
    const bool is_classification_metric = metric != "loss" && metric != "mse" && metric != "rmse" && metric != "mae" &&
                                          metric != "r2" && metric != "pearson";
    if (classification != is_classification_metric && metric != "loss") {
      throw ConfigError("search.metric: " + metric + " does not apply to " +
                        (classification ? "classification" : "regression") + " data");
    }
    if (use_cv) {
      // Series windows are in time order: shuffled folds would train on the future of
      // what they hold out.
      const bool time_ordered = bc.cv.scheme == "time" || (bc.cv.scheme == "auto" && data->meta().series);
      if (time_ordered && bc.cv.repeats > 1) {
        throw ConfigError("cv.repeats: time-ordered folds (cv.scheme=" + bc.cv.scheme +
                          (bc.cv.scheme == "auto" ? ", series data" : "") +
                          ") are one fixed split; set cv.repeats=1, or cv.scheme=kfold for shuffled folds");
      }
      plan = time_ordered ? make_time_fold_plan(n, static_cast<int>(bc.cv.folds), data->meta().series_reach)
                          : make_fold_plan(n, labels, static_cast<int>(bc.cv.folds), static_cast<int>(bc.cv.repeats),
                                           bc.cv.stratified && classification, static_cast<std::uint64_t>(bc.cv.seed));
      for (const auto& f : plan.folds) {
        splits.push_back(TrainValSplit{f.train, f.held_out});
        split_ids.emplace_back(f.repeat, f.index);
      }
    } else {
      splits.push_back(split_train_validation(n, bc.data.val_fraction, static_cast<std::uint64_t>(bc.train.seed)));
      if (splits.back().validation.empty()) {
        throw ConfigError("search.scoring: holdout scoring needs data.val_fraction > 0 (or use cv scoring)");
      }
      split_ids.emplace_back(0, -1);
    }
  });
  // Finished tasks are recorded in run_dir/tasks as they arrive; checkpoint.resume=auto reuses them.
  TaskJournal journal(run_dir + "/tasks");
  std::size_t recorded = 0;
  collective_check(world, [&] {
    if (root) recorded = journal.open(bc.checkpoint.resume, base.resolved_json);
  });
  if (root && recorded > 0) {
    std::printf("resuming: %zu finished task(s) recorded in %s/tasks are not run again\n", recorded, run_dir.c_str());
  }
  if (root) {
    make_directories(run_dir);
    if (use_cv) {
      json::array folds;
      for (const auto& f : plan.folds) {
        json::array held;
        for (auto i : f.held_out) held.push_back(i);
        folds.push_back(json::object{{"repeat", f.repeat}, {"fold", f.index}, {"held_out", held}});
      }
      write_file_atomic(run_dir + "/folds.json", compact_json(json::object{{"format", "hpctrain-folds"},
                                                                           {"format_version", 1},
                                                                           {"k", plan.k},
                                                                           {"repeats", plan.repeats},
                                                                           {"stratified", plan.stratified},
                                                                           {"scheme", plan.scheme},
                                                                           {"gap", plan.gap},
                                                                           {"seed", bc.cv.seed},
                                                                           {"train_samples", n},
                                                                           {"folds", folds}}) +
                                                     "\n");
    }
    std::printf("%s: %zu trial(s) x %zu %s on %d group(s) of %d rank(s)\n",
                searching ? ("search (" + bc.search.method + ")").c_str() : "cross-validation", trials.size(),
                splits.size(), use_cv ? "fold(s)" : "holdout split", scheduler->group_count(), group.size());
    std::fflush(stdout);
  }

  // Rounds: one for grid, random and plain CV; successive halving runs rungs of growing
  // epoch budgets over the surviving trials.
  std::vector<int> survivors;
  for (std::size_t t = 0; t < trials.size(); ++t) {
    if (static_cast<std::int64_t>(t) % bc.search.shards == bc.search.shard) survivors.push_back(static_cast<int>(t));
  }
  const std::vector<int> members = survivors;  // the trials this job reports on
  const bool halving = bc.search.method == "halving";
  std::int64_t epochs = halving ? std::min(bc.search.halving_min_epochs, bc.train.epochs) : 0;
  json::array rungs;
  std::vector<json::object> outcomes_all;                 // rank 0: every outcome, last rung last
  std::vector<json::object> last_summary(trials.size());  // rank 0: latest summary per trial
  std::vector<int> reached(trials.size(), 0);
  std::vector<char> incomplete(trials.size(), 1);
  int rung = 0;
  while (true) {
    struct Task {
      int trial;
      std::size_t split;
    };
    std::vector<Task> tasks;
    for (int t : survivors) {
      for (std::size_t s = 0; s < splits.size(); ++s) tasks.push_back(Task{t, s});
    }
    // Tasks recorded as finished before a preemption are not run again.
    auto key_of = [&](const Task& task) {
      return TaskJournal::key(rung, trials[static_cast<std::size_t>(task.trial)].trial.id, split_ids[task.split].first,
                              split_ids[task.split].second);
    };
    std::vector<std::string> outcomes(tasks.size());
    std::string todo_text;
    if (root) {
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (const std::string* done = journal.find(key_of(tasks[i]))) {
          outcomes[i] = *done;
        } else {
          todo_text += (todo_text.empty() ? "" : ",") + std::to_string(i);
        }
      }
    }
    world.broadcast(todo_text, 0);
    std::vector<std::size_t> todo;
    std::stringstream todo_list(todo_text);
    for (std::string item; std::getline(todo_list, item, ',');) todo.push_back(std::stoul(item));
    const auto ran = scheduler->run(
        static_cast<int>(todo.size()),
        [&](int j) {
          const Task& task = tasks[todo[static_cast<std::size_t>(j)]];
          const TrialPlan& tp = trials[static_cast<std::size_t>(task.trial)];
          FoldTask ft;
          ft.trial = tp.trial.id;
          ft.repeat = split_ids[task.split].first;
          ft.fold = split_ids[task.split].second;
          ft.epochs = halving ? epochs : tp.config.train.epochs;
          ft.in_search = searching;
          ft.keep_predictions = bc.cv.save_predictions;
          return run_fold_task(ft, tp.config, *data, splits[task.split], group, *scheduler, scheduler->group_index());
        },
        [&](int j, const std::string& outcome) {
          journal.record(key_of(tasks[todo[static_cast<std::size_t>(j)]]), outcome);
        });
    if (root) {
      for (std::size_t j = 0; j < todo.size(); ++j) outcomes[todo[j]] = ran[j];
    }
    // A preemption signal stopped tasks: what finished is recorded; end with exit code 75.
    int preempted = 0;
    if (root) {
      for (const auto& text : outcomes) preempted += json::parse(text).as_object().at("status") == "preempted" ? 1 : 0;
    }
    world.broadcast(&preempted, sizeof(preempted), 0);
    if (preempted > 0) {
      throw CollectiveError("preempted: " + std::to_string(tasks.size() - static_cast<std::size_t>(preempted)) +
                                " of " + std::to_string(tasks.size()) +
                                " task(s) of this round finished, recorded in " + run_dir +
                                "/tasks; run again with checkpoint.resume=auto to go on",
                            0, kPreemptedExitCode);
    }

    std::string survivor_text;
    if (root) {
      // Complete trials (every fold scored) rank above incomplete ones, then by the metric.
      std::vector<std::tuple<int, double, int>> ranked;
      json::array rung_trials;
      std::map<int, std::vector<const json::object*>> ok;
      std::vector<json::object> parsed;
      parsed.reserve(outcomes.size());
      for (const auto& text : outcomes) parsed.push_back(json::parse(text).as_object());
      for (const auto& o : parsed) {
        if (o.at("status").as_string() == "ok") ok[static_cast<int>(o.at("trial").as_int64())].push_back(&o);
      }
      for (int t : survivors) {
        const auto& list = ok[t];
        json::object summary = list.empty() ? json::object{} : summarize_trial(list);
        const double score = summary_mean(summary, metric);
        const bool complete = summary_field(summary, metric, "n") == static_cast<double>(splits.size());
        // A trial that failed at this rung keeps the standing of the last rung it completed.
        if (!list.empty()) {
          last_summary[static_cast<std::size_t>(t)] = summary;
          reached[static_cast<std::size_t>(t)] = rung;
          incomplete[static_cast<std::size_t>(t)] = !complete;
        }
        if (std::isfinite(score)) ranked.emplace_back(complete ? 0 : 1, lower_is_better(metric) ? score : -score, t);
        rung_trials.push_back(json::object{
            {"trial", t}, {"score", std::isfinite(score) ? json::value(score) : nullptr}, {"complete", complete}});
      }
      std::sort(ranked.begin(), ranked.end());
      if (halving) {
        rungs.push_back(json::object{{"rung", rung}, {"epochs", epochs}, {"trials", rung_trials}});
        const std::size_t keep =
            (survivors.size() + static_cast<std::size_t>(bc.search.halving_eta) - 1) / bc.search.halving_eta;
        for (std::size_t i = 0; i < std::min(keep, ranked.size()); ++i)
          survivor_text += (survivor_text.empty() ? "" : ",") + std::to_string(std::get<2>(ranked[i]));
        std::printf("rung %d (%lld epochs): %zu trial(s), %zu go on\n", rung, static_cast<long long>(epochs),
                    survivors.size(), std::min(keep, ranked.size()));
        std::fflush(stdout);
      }
      // Predictions go to their files now and are not kept: a search holds many.
      const std::int64_t k = classification ? data->meta().num_classes : 0;
      if (bc.cv.save_predictions) make_directories(run_dir + "/predictions");
      for (auto& o : parsed) {
        o["rung"] = rung;
        if (bc.cv.save_predictions && o.at("status").as_string() == "ok" && o.contains("predictions")) {
          // A later rung's file replaces an earlier one's: the files follow the rung each trial reached.
          const std::string name =
              (searching ? "trial" + std::to_string(o.at("trial").as_int64()) + "_" : "") + fold_name(o) + ".csv";
          write_predictions_csv(run_dir + "/predictions/" + name, o, k);
        }
        o.erase("predictions");
        outcomes_all.push_back(std::move(o));
      }
    }
    if (!halving || survivors.size() <= 1 || epochs >= bc.train.epochs) break;
    world.broadcast(survivor_text, 0);
    survivors.clear();
    std::stringstream list(survivor_text);
    for (std::string item; std::getline(list, item, ',');) survivors.push_back(std::stoi(item));
    if (survivors.empty()) break;  // every trial failed
    epochs = std::min(epochs * bc.search.halving_eta, bc.train.epochs);
    ++rung;
  }

  // Rank 0: reports.
  ExperimentResult result;
  std::string chosen;
  if (root) {
    json::array outcome_rows;
    int failed = 0, succeeded = 0;
    for (auto o : outcomes_all) {
      if (o.at("status").as_string() == "ok") {
        ++succeeded;
      } else {
        ++failed;
      }
      outcome_rows.push_back(o);
    }
    result.any_ok = succeeded > 0;
    if (!searching) chosen = pretty_json(trials.front().config_json);
    const LaunchEnvironment launch = LaunchEnvironment::detect();
    json::object launch_vars;
    for (const auto& kv : launch.variables) launch_vars[kv.first] = kv.second;

    const json::object common{{"task", task_name(data->meta().task)},
                              {"data", bc.data.path},
                              {"scoring", use_cv ? "cv" : "holdout"},
                              {"folds", use_cv ? bc.cv.folds : 0},
                              {"repeats", use_cv ? bc.cv.repeats : 0},
                              {"stratified", use_cv && plan.stratified},
                              {"scheme", use_cv ? plan.scheme : "holdout"},
                              {"cv_seed", bc.cv.seed},
                              {"world_size", world.size()},
                              {"groups", scheduler->group_count()},
                              {"ranks_per_group", group.size()},
                              {"tasks_ok", succeeded},
                              {"tasks_failed", failed},
                              {"shards", bc.search.shards},
                              {"shard", bc.search.shard},
                              {"launcher", launch.launcher},
                              {"slurm_job", launch.slurm_job_tag()},
                              {"launch_environment", launch_vars},
                              {"wall_seconds", wall_seconds() - start}};
    std::ostringstream md;
    if (!searching) {
      json::object report{{"format", "hpctrain-cv-report"}, {"format_version", 1}};
      for (const auto& kv : common) report[kv.key()] = kv.value();
      report["folds_detail"] = outcome_rows;
      report["summary"] = last_summary[0];
      write_file_atomic(run_dir + "/cv_report.json", pretty_json(report));
      // Per-fold table.
      std::vector<std::string> columns =
          classification ? std::vector<std::string>{"loss",         "accuracy", "balanced_accuracy",  "precision_macro",
                                                    "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
                                                    "f1_weighted"}
                         : std::vector<std::string>{"loss", "mse", "rmse", "mae", "r2", "pearson"};
      std::ostringstream csv;
      csv.precision(10);
      csv << "repeat,fold,status,group,train_samples,held_out_samples";
      for (const auto& c : columns) csv << "," << c;
      csv << ",train_seconds,samples_per_s,error\n";
      for (const auto& v : outcome_rows) {
        const auto& o = v.as_object();
        const bool is_ok = o.at("status").as_string() == "ok";
        csv << o.at("repeat").as_int64() << "," << o.at("fold").as_int64() << "," << o.at("status").as_string().c_str()
            << "," << o.at("group").as_int64() << "," << o.at("train_samples").as_int64() << ","
            << o.at("held_out_samples").as_int64();
        for (const auto& c : columns) {
          csv << ",";
          if (is_ok) {
            const auto& m = o.at("metrics").as_object().at(c);
            if (!m.is_null()) csv << as_double(m);
          }
        }
        csv << "," << (is_ok ? fmt(as_double(o.at("train_seconds")), "%.3f") : "") << ","
            << (is_ok ? fmt(as_double(o.at("samples_per_s")), "%.1f") : "") << ",";
        if (!is_ok) {
          std::string e(o.at("error").as_string());
          std::replace(e.begin(), e.end(), '"', '\'');
          csv << "\"" << e << "\"";
        }
        csv << "\n";
      }
      write_file_atomic(run_dir + "/cv_folds.csv", csv.str());
      md << "# Cross-validation: " << bc.data.path << "\n\n"
         << bc.cv.folds << "-fold" << (plan.stratified ? " stratified" : "")
         << (plan.scheme == "time" ? " time-ordered (forward-chaining, gap " + std::to_string(plan.gap) + ")" : "")
         << " cross-validation" << (bc.cv.repeats > 1 ? ", " + std::to_string(bc.cv.repeats) + " repeats" : "")
         << ", model `" << bc.model.name << "`, " << bc.train.epochs << " epoch(s); " << world.size() << " ranks in "
         << scheduler->group_count() << " group(s) of " << group.size() << "; " << succeeded << " fold(s) ok, "
         << failed << " failed; " << fmt(wall_seconds() - start, "%.1f") << " s.\n\n"
         << "| metric | mean | std | 95% CI |\n|---|---|---|---|\n";
      columns.push_back("train_seconds");
      columns.push_back("samples_per_s");
      for (const auto& c : columns) {
        auto it = last_summary[0].find(c);
        if (it == last_summary[0].end()) continue;
        const auto& s = it->value().as_object();
        const auto& ci = s.at("ci95");
        md << "| " << c << " | " << fmt(summary_mean(last_summary[0], c)) << " | "
           << fmt(summary_std(last_summary[0], c)) << " | "
           << (ci.is_array() && !ci.as_array()[0].is_null()
                   ? fmt(as_double(ci.as_array()[0])) + " .. " + fmt(as_double(ci.as_array()[1]))
                   : std::string("n/a"))
           << " |\n";
      }
      for (const auto& v : outcome_rows) {
        const auto& o = v.as_object();
        if (o.at("status").as_string() != "ok") {
          md << "\nFold " << fold_name(o) << " failed: " << o.at("error").as_string().c_str() << "\n";
        }
      }
      write_file_atomic(run_dir + "/cv_summary.md", md.str());
    } else {
      SearchReport in{&bc,    &trials, members, outcome_rows, last_summary, reached, incomplete,
                      metric, use_cv,  halving, common,       rungs,        run_dir};
      md << write_search_reports(in, chosen);
    }
    result.summary_text = md.str();
  }
  world.broadcast(chosen, 0);
  int any = result.any_ok ? 1 : 0;
  world.broadcast(&any, sizeof(any), 0);
  result.any_ok = any != 0;
  result.chosen_config = chosen;
  return result;
}

ExperimentResult merge_search_shards(const std::string& run_dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(run_dir)) throw DataError(run_dir + ": not a directory");
  struct Shard {
    std::string dir;
    json::object report;
    std::string config_path;
    std::string config_text;
  };
  std::map<std::int64_t, Shard> found;
  std::int64_t shards = 0;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(run_dir)) {
    if (entry.is_directory() && fs::is_regular_file(entry.path() / "search_report.json")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const auto& dir : dirs) {
    const std::string path = (dir / "search_report.json").string();
    json::object report;
    try {
      report = json::parse(read_file(path)).as_object();
    } catch (const std::exception& e) {
      throw DataError(path + ": not a search report (" + e.what() + ")");
    }
    if (!report.contains("format") || report.at("format") != "hpctrain-search-report" || !report.contains("shards") ||
        !report.contains("shard") || !report.contains("tasks") || !report.contains("metric")) {
      throw DataError(path +
                      ": not the search report of a shard (format hpctrain-search-report with shards and shard)");
    }
    const std::int64_t n = report.at("shards").to_number<std::int64_t>();
    const std::int64_t k = report.at("shard").to_number<std::int64_t>();
    if (n <= 1)
      throw DataError(path + ": written by a search that ran as one job (search.shards = 1): nothing to merge");
    if (shards != 0 && n != shards) {
      throw DataError(path + ": search.shards is " + std::to_string(n) + " here but " + std::to_string(shards) +
                      " in " + found.begin()->second.dir + ": the folders are from different searches");
    }
    shards = n;
    if (found.count(k)) {
      throw DataError(path + ": shard " + std::to_string(k) + " also reported in " + found.at(k).dir);
    }
    Shard sh{dir.string(), std::move(report), (dir / "config.json").string(), ""};
    try {
      sh.config_text = read_file(sh.config_path);
    } catch (const std::exception&) {
      throw DataError(sh.config_path + ": missing; each shard's run directory holds the config it ran");
    }
    found.emplace(k, std::move(sh));
  }
  if (found.empty()) {
    throw DataError(run_dir + ": no shard reports (search_report.json) in the folders under it");
  }

  // Every shard must have run the same search: the same config but for its shard and folder.
  const std::vector<std::string> normalize = {"search.shard=0", "run.dir=merged"};
  const Shard& first = found.begin()->second;
  const ResolvedConfig base = parse_config(first.config_text, first.config_path, normalize);
  for (const auto& [k, sh] : found) {
    if (parse_config(sh.config_text, sh.config_path, normalize).resolved_json != base.resolved_json) {
      throw DataError(sh.config_path + ": ran a different config than " + first.config_path +
                      " (only search.shard and run.dir may differ between shards)");
    }
  }
  const ExperimentPlan xp = plan_experiment(base);
  const std::string metric(first.report.at("metric").as_string());

  SearchReport in;
  in.bc = &base.config;
  in.trials = &xp.trials;
  in.metric = metric;
  in.use_cv = xp.use_cv;
  in.run_dir = run_dir;
  json::array merged_from;
  double wall = 0;
  for (const auto& [k, sh] : found) {
    for (const auto& task : sh.report.at("tasks").as_array()) in.outcome_rows.push_back(task);
    wall = std::max(wall, as_double(sh.report.at("wall_seconds")));
    merged_from.push_back(json::string(sh.dir));
  }
  std::map<std::int64_t, std::size_t> index_of_id;
  for (std::size_t t = 0; t < xp.trials.size(); ++t) {
    in.members.push_back(static_cast<int>(t));
    index_of_id[xp.trials[t].trial.id] = t;
    const auto k = static_cast<std::int64_t>(t) % shards;
    if (found.count(k)) continue;
    in.outcome_rows.push_back(json::object{
        {"trial", xp.trials[t].trial.id},
        {"repeat", 0},
        {"fold", -1},
        {"rung", 0},
        {"epochs", xp.trials[t].config.train.epochs},
        {"status", "failed"},
        {"error", "shard " + std::to_string(k) + " of " + std::to_string(shards) +
                      " left no search_report.json under " + run_dir + " (did its job fail or not run?)"}});
  }
  std::map<std::size_t, std::vector<const json::object*>> ok;
  int succeeded = 0, failed = 0;
  for (const auto& v : in.outcome_rows) {
    const auto& o = v.as_object();
    const auto id = o.at("trial").to_number<std::int64_t>();
    if (!index_of_id.count(id))
      throw DataError(run_dir + ": a shard reports trial " + std::to_string(id) + ", which the search does not have");
    if (o.at("status").as_string() == "ok") {
      ++succeeded;
      ok[index_of_id.at(id)].push_back(&o);
    } else {
      ++failed;
    }
  }
  in.last_summary.resize(xp.trials.size());
  in.reached.assign(xp.trials.size(), 0);
  in.incomplete.assign(xp.trials.size(), 1);
  for (const auto& [t, list] : ok) {
    in.last_summary[t] = summarize_trial(list);
    in.incomplete[t] = summary_field(in.last_summary[t], metric, "n") != static_cast<double>(xp.split_count);
  }
  for (const char* key : {"task", "data", "scoring", "folds", "repeats", "stratified", "scheme", "cv_seed",
                          "world_size", "groups", "ranks_per_group"}) {
    if (first.report.contains(key)) in.common[key] = first.report.at(key);
  }
  in.common["tasks_ok"] = succeeded;
  in.common["tasks_failed"] = failed;
  in.common["shards"] = shards;
  in.common["shards_reported"] = static_cast<std::int64_t>(found.size());
  in.common["merged_from"] = merged_from;
  in.common["wall_seconds"] = wall;

  ExperimentResult result;
  result.summary_text = write_search_reports(in, result.chosen_config);
  result.any_ok = succeeded > 0;
  return result;
}

}  // namespace hpctrain
