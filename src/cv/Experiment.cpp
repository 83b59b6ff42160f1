#include "cv/Experiment.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "cv/FoldPlan.hpp"
#include "cv/FoldRunner.hpp"
#include "cv/GroupScheduler.hpp"
#include "data/ShardedDataset.hpp"
#include "eval/Scores.hpp"
#include "report/MetricsLog.hpp"
#include "report/SystemStats.hpp"
#include "search/SearchSpace.hpp"
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
    out << "index,target,prediction,loss\n";
    for (std::size_t i = 0; i < index.size(); ++i) {
      out << index[i].as_int64() << "," << as_double(target[i]) << "," << as_double(outputs[i]) << ","
          << as_double(loss[i]) << "\n";
    }
  }
  write_file_atomic(path, out.str());
}

std::string fold_name(const json::object& o) {
  const auto fold = o.at("fold").as_int64();
  if (fold < 0) return "holdout";
  return "repeat" + std::to_string(o.at("repeat").as_int64()) + "_fold" + std::to_string(fold);
}

}  // namespace

ExperimentResult run_experiment(const ResolvedConfig& base, const Communicator& world, const std::string& run_dir) {
  const Config& bc = base.config;
  const bool root = world.rank() == 0;
  const bool searching = bc.search.method != "none";
  const double start = wall_seconds();

  // Everything below up to the data is the same computation on every rank, so a bad
  // setting throws the same ConfigError everywhere; collective_check only adds agreement.
  std::vector<TrialPlan> trials;
  bool use_cv = false;
  std::unique_ptr<GroupScheduler> scheduler;
  collective_check(world, [&] {
    use_cv = !searching || bc.search.scoring == "cv" || (bc.search.scoring == "auto" && bc.cv.folds >= 2);
    if (use_cv && bc.cv.folds < 2) {
      throw ConfigError(searching ? "search.scoring: cv scoring needs cv.folds >= 2"
                                  : "cv.folds: cross-validation needs at least 2 folds");
    }
    if (use_cv && bc.train.early_stop_patience > 0) {
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
      if (use_cv && plan.config.train.early_stop_patience > 0) {
        throw ConfigError(origin +
                          ": train.early_stop_patience: early stopping would select epochs on the held-out "
                          "fold; turn it off for cross-validation");
      }
      plan.trial = std::move(t);
      trials.push_back(std::move(plan));
    }
    scheduler = std::make_unique<GroupScheduler>(world, static_cast<int>(bc.cv.ranks_per_group));
  });
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
      plan = make_fold_plan(n, labels, static_cast<int>(bc.cv.folds), static_cast<int>(bc.cv.repeats),
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
  for (std::size_t t = 0; t < trials.size(); ++t) survivors.push_back(static_cast<int>(t));
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
    const auto outcomes = scheduler->run(static_cast<int>(tasks.size()), [&](int i) {
      const Task& task = tasks[static_cast<std::size_t>(i)];
      const TrialPlan& tp = trials[static_cast<std::size_t>(task.trial)];
      FoldTask ft;
      ft.trial = tp.trial.id;
      ft.repeat = split_ids[task.split].first;
      ft.fold = split_ids[task.split].second;
      ft.epochs = halving ? epochs : tp.config.train.epochs;
      ft.in_search = searching;
      ft.keep_predictions = bc.cv.save_predictions;
      return run_fold_task(ft, tp.config, *data, splits[task.split], group, *scheduler, scheduler->group_index());
    });

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
    // Best trial: highest rung reached, then the metric.
    std::vector<std::pair<std::tuple<int, int, double>, int>> order;
    for (std::size_t t = 0; t < trials.size(); ++t) {
      const double s = summary_mean(last_summary[t], metric);
      const double key = std::isfinite(s) ? (lower_is_better(metric) ? s : -s) : INFINITY;
      order.push_back({{-reached[t], incomplete[t] ? 1 : 0, key}, static_cast<int>(t)});
    }
    std::sort(order.begin(), order.end());
    const int best = order.empty() ? 0 : order.front().second;
    chosen = pretty_json(trials[static_cast<std::size_t>(best)].config_json);

    const json::object common{{"task", task_name(data->meta().task)},
                              {"data", bc.data.path},
                              {"scoring", use_cv ? "cv" : "holdout"},
                              {"folds", use_cv ? bc.cv.folds : 0},
                              {"repeats", use_cv ? bc.cv.repeats : 0},
                              {"stratified", use_cv && plan.stratified},
                              {"cv_seed", bc.cv.seed},
                              {"world_size", world.size()},
                              {"groups", scheduler->group_count()},
                              {"ranks_per_group", group.size()},
                              {"tasks_ok", succeeded},
                              {"tasks_failed", failed},
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
         << bc.cv.folds << "-fold" << (plan.stratified ? " stratified" : "") << " cross-validation"
         << (bc.cv.repeats > 1 ? ", " + std::to_string(bc.cv.repeats) + " repeats" : "") << ", model `" << bc.model.name
         << "`, " << bc.train.epochs << " epoch(s); " << world.size() << " ranks in " << scheduler->group_count()
         << " group(s) of " << group.size() << "; " << succeeded << " fold(s) ok, " << failed << " failed; "
         << fmt(wall_seconds() - start, "%.1f") << " s.\n\n"
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
      json::array board;
      std::ostringstream csv;
      csv.precision(10);
      csv << "rank,trial,parameters," << metric << "_mean," << metric
          << "_std,rung,epochs,folds_ok,folds_failed,train_seconds,samples_per_s,model_parameters,status\n";
      md << "# Search leaderboard: " << bc.search.method << " search, metric `" << metric << "` ("
         << (lower_is_better(metric) ? "lower" : "higher") << " is better), "
         << (use_cv ? std::to_string(bc.cv.folds) + "-fold cross-validation" : std::string("holdout")) << "\n\n"
         << "| rank | trial | parameters | " << metric
         << " | rung | time (s) | samples/s | model parameters | status |\n"
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
        csv << position << "," << tp.trial.id << ",\"" << quoted << "\","
            << (std::isfinite(mean) ? fmt(mean, "%.6f") : "") << "," << (std::isfinite(sd) ? fmt(sd, "%.6f") : "")
            << "," << reached[t] << "," << trial_epochs << "," << ok_count << "," << fail_count << ","
            << fmt(summary_mean(summary, "train_seconds"), "%.3f") << ","
            << fmt(summary_mean(summary, "samples_per_s"), "%.1f") << "," << parameters << ",\"" << status << "\"\n";
        md << "| " << position << " | " << tp.trial.id << " | `" << params << "` | " << fmt(mean)
           << (std::isfinite(sd) ? " ± " + fmt(sd) : std::string()) << " | " << reached[t] << " | "
           << fmt(summary_mean(summary, "train_seconds"), "%.1f") << " | "
           << fmt(summary_mean(summary, "samples_per_s"), "%.0f") << " | " << parameters << " | " << status << " |\n";
      }
      if (!failures.str().empty()) md << "\nFailures (the first error of each trial):\n\n" << failures.str();
      json::object report{{"format", "hpctrain-search-report"}, {"format_version", 1}};
      for (const auto& kv : common) report[kv.key()] = kv.value();
      report["method"] = bc.search.method;
      report["metric"] = metric;
      report["lower_is_better"] = lower_is_better(metric);
      report["leaderboard"] = board;
      if (halving) report["rungs"] = rungs;
      report["tasks"] = outcome_rows;
      report["best_trial"] = trials[static_cast<std::size_t>(best)].trial.id;
      write_file_atomic(run_dir + "/search_report.json", pretty_json(report));
      write_file_atomic(run_dir + "/leaderboard.csv", csv.str());
      write_file_atomic(run_dir + "/leaderboard.md", md.str());
      write_file_atomic(run_dir + "/best_config.json", chosen);
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

}  // namespace hpctrain
