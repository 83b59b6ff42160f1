// search-merge: the shards of a search that ran as several jobs (search.shards > 1) joined
// into the leaderboard one job would have written (merge_search_shards, Experiment.hpp).
#include <algorithm>
#include <filesystem>
#include <map>

#include "experiment/Experiment.hpp"
#include "experiment/ExperimentPlan.hpp"
#include "experiment/Reports.hpp"
#include "experiment/ScoringMetric.hpp"
#include "experiment/TaskOutcome.hpp"
#include "experiment/TrialSummary.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace fs = std::filesystem;
namespace {

struct Shard {
  std::string dir;
  json::object report;
  std::string config_path;
  std::string config_text;
};

struct ShardSet {
  std::map<std::int64_t, Shard> found;  // by shard index
  std::int64_t shards = 0;              // search.shards they ran with
};

json::object read_shard_report(const std::string& path) {
  json::object report;
  try {
    report = json::parse(read_file(path)).as_object();
  } catch (const std::exception& e) {
    throw DataError(path + ": not a search report (" + e.what() + ")");
  }
  if (!report.contains("format") || report.at("format") != "hpctrain-search-report" || !report.contains("shards") ||
      !report.contains("shard") || !report.contains("tasks") || !report.contains("metric")) {
    throw DataError(path + ": not the search report of a shard (format hpctrain-search-report with shards and shard)");
  }
  return report;
}

// The run directories directly under run_dir that hold a search_report.json, by shard.
ShardSet find_shards(const std::string& run_dir) {
  ShardSet set;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(run_dir)) {
    if (entry.is_directory() && fs::is_regular_file(entry.path() / "search_report.json")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const auto& dir : dirs) {
    const std::string path = (dir / "search_report.json").string();
    json::object report = read_shard_report(path);
    const std::int64_t n = report.at("shards").to_number<std::int64_t>();
    const std::int64_t k = report.at("shard").to_number<std::int64_t>();
    if (n <= 1)
      throw DataError(path + ": written by a search that ran as one job (search.shards = 1): nothing to merge");
    if (set.shards != 0 && n != set.shards) {
      throw DataError(path + ": search.shards is " + std::to_string(n) + " here but " + std::to_string(set.shards) +
                      " in " + set.found.begin()->second.dir + ": the folders are from different searches");
    }
    set.shards = n;
    if (set.found.count(k)) {
      throw DataError(path + ": shard " + std::to_string(k) + " also reported in " + set.found.at(k).dir);
    }
    Shard sh{dir.string(), std::move(report), (dir / "config.json").string(), ""};
    try {
      sh.config_text = read_file(sh.config_path);
    } catch (const std::exception&) {
      throw DataError(sh.config_path + ": missing; each shard's run directory holds the config it ran");
    }
    set.found.emplace(k, std::move(sh));
  }
  if (set.found.empty()) {
    throw DataError(run_dir + ": no shard reports (search_report.json) in the folders under it");
  }
  return set;
}

// Every shard must have run the same search: the same config but for its shard and folder.
ResolvedConfig common_config(const ShardSet& set) {
  const std::vector<std::string> normalize = {"search.shard=0", "run.dir=merged"};
  const Shard& first = set.found.begin()->second;
  ResolvedConfig base = parse_config(first.config_text, first.config_path, normalize);
  for (const auto& [k, sh] : set.found) {
    if (parse_config(sh.config_text, sh.config_path, normalize).resolved_json != base.resolved_json) {
      throw DataError(sh.config_path + ": ran a different config than " + first.config_path +
                      " (only search.shard and run.dir may differ between shards)");
    }
  }
  return base;
}

// The shards' task outcomes in shard order, then a failed placeholder for each trial of a
// shard that left no report.
std::vector<TaskOutcome> merged_outcomes(const ShardSet& set, const ExperimentPlan& xp, const std::string& run_dir) {
  std::vector<TaskOutcome> outcomes;
  for (const auto& [k, sh] : set.found) {
    for (const auto& task : sh.report.at("tasks").as_array()) {
      try {
        outcomes.push_back(task_outcome_from_json(task.as_object()));
      } catch (const std::exception& e) {
        throw DataError(sh.dir + "/search_report.json: tasks: " + e.what());
      }
    }
  }
  for (std::size_t t = 0; t < xp.trials.size(); ++t) {
    const auto k = static_cast<std::int64_t>(t) % set.shards;
    if (set.found.count(k)) continue;
    TaskOutcome missing;
    missing.ran = false;
    missing.trial = xp.trials[t].trial.id;
    missing.repeat = 0;
    missing.fold = -1;
    missing.rung = 0;
    missing.epochs = xp.trials[t].config.train.epochs;
    missing.status = TaskStatus::Failed;
    missing.error = "shard " + std::to_string(k) + " of " + std::to_string(set.shards) +
                    " left no search_report.json under " + run_dir + " (did its job fail or not run?)";
    outcomes.push_back(std::move(missing));
  }
  return outcomes;
}

std::vector<TrialStanding> merged_standings(const std::vector<TaskOutcome>& outcomes, const ExperimentPlan& xp,
                                            const std::string& metric, const std::string& run_dir) {
  std::map<std::int64_t, std::size_t> index_of_id;
  for (std::size_t t = 0; t < xp.trials.size(); ++t) index_of_id[xp.trials[t].trial.id] = t;
  std::map<std::size_t, std::vector<const TaskOutcome*>> ok;
  for (const auto& o : outcomes) {
    if (!index_of_id.count(o.trial))
      throw DataError(run_dir + ": a shard reports trial " + std::to_string(o.trial) +
                      ", which the search does not have");
    if (o.ok()) ok[index_of_id.at(o.trial)].push_back(&o);
  }
  std::vector<TrialStanding> standings(xp.trials.size());
  for (const auto& [t, list] : ok) {
    standings[t].summary = summarize_trial(list);
    standings[t].incomplete = summary_count(standings[t].summary, metric) != static_cast<std::int64_t>(xp.split_count);
  }
  return standings;
}

ReportHeader merged_header(const ShardSet& set, const OutcomeCounts& counts) {
  const json::object& first = set.found.begin()->second.report;
  ReportHeader header;
  for (const char* key : {"task", "data", "scoring", "folds", "repeats", "stratified", "scheme", "cv_seed",
                          "world_size", "groups", "ranks_per_group", "pipeline_stages"}) {
    if (first.contains(key)) header[key] = first.at(key);
  }
  json::array merged_from;
  double wall = 0;
  for (const auto& [k, sh] : set.found) {
    wall = std::max(wall, json_number(sh.report.at("wall_seconds")));
    merged_from.push_back(json::string(sh.dir));
  }
  header["tasks_ok"] = counts.ok;
  header["tasks_failed"] = counts.failed;
  header["shards"] = set.shards;
  header["shards_reported"] = static_cast<std::int64_t>(set.found.size());
  header["merged_from"] = merged_from;
  header["wall_seconds"] = wall;
  return header;
}

}  // namespace

ExperimentResult merge_search_shards(const std::string& run_dir) {
  if (!fs::is_directory(run_dir)) throw DataError(run_dir + ": not a directory");
  const ShardSet set = find_shards(run_dir);
  const ResolvedConfig base = common_config(set);
  const ExperimentPlan xp = plan_experiment(base);
  const std::string metric(set.found.begin()->second.report.at("metric").as_string());

  const std::vector<TaskOutcome> outcomes = merged_outcomes(set, xp, run_dir);
  const std::vector<TrialStanding> standings = merged_standings(outcomes, xp, metric, run_dir);
  const OutcomeCounts counts = count_outcomes(outcomes);
  SearchReportInput in;
  in.method = base.config.search.method;
  in.metric = metric;
  in.lower_is_better = lower_is_better(metric);
  in.use_cv = xp.use_cv;
  in.folds = base.config.cv.folds;
  in.header = merged_header(set, counts);
  std::vector<int> members(xp.trials.size());
  for (std::size_t t = 0; t < members.size(); ++t) members[t] = static_cast<int>(t);
  const SearchReports reports = render_search_reports(in, xp.trials, members, outcomes, standings);
  write_search_reports(run_dir, reports);

  ExperimentResult result;
  result.summary_text = reports.leaderboard_md;
  result.chosen_config = reports.best_config_json;
  result.any_ok = counts.ok > 0;
  return result;
}

}  // namespace hpctrain
