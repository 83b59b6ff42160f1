#include "experiment/Reports.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <tuple>

#include "eval/Scores.hpp"
#include "experiment/ScoringMetric.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

std::string fmt(double v, const char* format = "%.4f") {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

json::value number_or_null(double v) {
  return std::isfinite(v) ? json::value(v) : json::value(nullptr);
}

json::array outcome_rows(const std::vector<TaskOutcome>& outcomes) {
  json::array rows;
  for (const auto& o : outcomes) rows.push_back(to_json(o));
  return rows;
}

json::object with_format(const char* format, const ReportHeader& header) {
  json::object report{{"format", format}, {"format_version", 1}};
  for (const auto& kv : header) report[kv.key()] = kv.value();
  return report;
}

std::string cv_folds_csv(const std::vector<TaskOutcome>& outcomes, const std::vector<std::string>& columns) {
  std::ostringstream csv;
  csv.precision(10);
  csv << "repeat,fold,status,group,train_samples,held_out_samples";
  for (const auto& c : columns) csv << "," << c;
  csv << ",train_seconds,samples_per_s,error\n";
  for (const auto& o : outcomes) {
    csv << o.repeat << "," << o.fold << "," << to_string(o.status) << "," << o.group << "," << o.train_samples << ","
        << o.held_out_samples;
    for (const auto& c : columns) {
      csv << ",";
      if (o.ok() && std::isfinite(o.metric(c))) csv << o.metric(c);
    }
    csv << "," << (o.ok() ? fmt(o.train_seconds, "%.3f") : "") << "," << (o.ok() ? fmt(o.samples_per_s, "%.1f") : "")
        << ",";
    if (!o.ok()) {
      std::string e = o.error;
      std::replace(e.begin(), e.end(), '"', '\'');
      csv << "\"" << e << "\"";
    }
    csv << "\n";
  }
  return csv.str();
}

std::string cv_summary_md(const CvReportInput& in, const std::vector<TaskOutcome>& outcomes,
                          const TrialSummary& summary) {
  const Config& bc = *in.config;
  const OutcomeCounts counts = count_outcomes(outcomes);
  std::ostringstream md;
  md << "# Cross-validation: " << bc.data.path << "\n\n"
     << bc.cv.folds << "-fold" << (in.stratified ? " stratified" : "")
     << (in.scheme == "time" ? " time-ordered (forward-chaining, gap " + std::to_string(in.gap) + ")" : "")
     << " cross-validation" << (bc.cv.repeats > 1 ? ", " + std::to_string(bc.cv.repeats) + " repeats" : "")
     << ", model `" << bc.model.name << "`, " << bc.train.epochs << " epoch(s); " << in.world_size << " ranks in "
     << in.groups << " group(s) of " << in.ranks_per_group << "; " << counts.ok << " fold(s) ok, " << counts.failed
     << " failed; " << fmt(in.wall_seconds, "%.1f") << " s.\n\n"
     << "| metric | mean | std | 95% CI |\n|---|---|---|---|\n";
  std::vector<std::string> rows = fold_table_metrics(in.classification);
  rows.push_back("train_seconds");
  rows.push_back("samples_per_s");
  for (const auto& name : rows) {
    const auto it = summary.find(name);
    if (it == summary.end()) continue;
    const Summary& s = it->second;
    md << "| " << name << " | " << fmt(s.mean) << " | " << fmt(s.std) << " | "
       << (std::isfinite(s.ci95_low) ? fmt(s.ci95_low) + " .. " + fmt(s.ci95_high) : std::string("n/a")) << " |\n";
  }
  for (const auto& o : outcomes) {
    if (!o.ok()) md << "\nFold " << split_name(o.repeat, o.fold) << " failed: " << o.error << "\n";
  }
  return md.str();
}

// One trial's line of the leaderboard: its folds at the rung it reached.
struct LeaderboardRow {
  int ok = 0, failed = 0;
  std::int64_t parameters = 0;
  std::int64_t epochs = 0;
  std::string first_error;
  int failed_later = -1;  // a later rung where a fold failed
  std::string status() const {
    std::string s = ok == 0 ? "failed"
                    : failed > 0
                        ? "incomplete (" + std::to_string(ok) + " of " + std::to_string(ok + failed) + " folds)"
                        : "ok";
    if (failed_later >= 0) s += ", failed at rung " + std::to_string(failed_later);
    return s;
  }
};

LeaderboardRow leaderboard_row(int trial_id, int reached, const std::vector<TaskOutcome>& outcomes) {
  LeaderboardRow row;
  for (const auto& o : outcomes) {
    if (o.trial != trial_id) continue;
    const int rung = o.rung.value_or(0);
    if (!o.ok() && row.first_error.empty()) row.first_error = o.error;
    if (!o.ok() && rung > reached) row.failed_later = rung;
    if (rung != reached) continue;
    row.epochs = o.epochs;
    if (o.ok()) {
      ++row.ok;
      row.parameters = o.parameters;
    } else {
      ++row.failed;
    }
  }
  return row;
}

// Best first: highest rung reached, complete before incomplete, then the metric.
std::vector<int> leaderboard_order(const SearchReportInput& in, const std::vector<int>& members,
                                   const std::vector<TrialStanding>& standings) {
  std::vector<std::pair<std::tuple<int, int, double>, int>> order;
  for (int m : members) {
    const TrialStanding& st = standings[static_cast<std::size_t>(m)];
    const double s = summary_mean(st.summary, in.metric);
    const double key = std::isfinite(s) ? (in.lower_is_better ? s : -s) : INFINITY;
    order.push_back({{-st.reached, st.incomplete ? 1 : 0, key}, m});
  }
  std::sort(order.begin(), order.end());
  std::vector<int> trials;
  for (const auto& entry : order) trials.push_back(entry.second);
  return trials;
}

std::string csv_quoted(const std::string& text) {
  std::string quoted;  // RFC 4180: quotes inside a quoted field are doubled
  for (char ch : text) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return "\"" + quoted + "\"";
}

}  // namespace

std::string folds_json(const FoldPlan& plan, std::int64_t seed, std::int64_t train_samples) {
  json::array folds;
  for (const auto& f : plan.folds) {
    json::array held;
    for (auto i : f.held_out) held.push_back(i);
    folds.push_back(json::object{{"repeat", f.repeat}, {"fold", f.index}, {"held_out", held}});
  }
  return compact_json(json::object{{"format", "hpctrain-folds"},
                                   {"format_version", 1},
                                   {"k", plan.k},
                                   {"repeats", plan.repeats},
                                   {"stratified", plan.stratified},
                                   {"scheme", plan.scheme},
                                   {"gap", plan.gap},
                                   {"seed", seed},
                                   {"train_samples", train_samples},
                                   {"folds", folds}}) +
         "\n";
}

std::string predictions_csv(const HeldOutPredictions& p, std::int64_t num_classes) {
  std::ostringstream out;
  out.precision(17);
  if (num_classes > 0) {
    const auto k = static_cast<std::size_t>(num_classes);
    out << "index,label,prediction,loss";
    for (std::size_t c = 0; c < k; ++c) out << ",score_" << c;
    out << "\n";
    // The class the fold's confusion matrix counted (eval/Scores: predicted_classes).
    const auto predicted = predicted_classes(p.outputs, num_classes);
    for (std::size_t i = 0; i < p.index.size(); ++i) {
      const std::size_t base = i * k;
      out << p.index[i] << "," << static_cast<std::int64_t>(p.target[i]) << "," << predicted[i] << "," << p.loss[i];
      for (std::size_t c = 0; c < k; ++c) out << "," << p.outputs[base + c];
      out << "\n";
    }
    return out.str();
  }
  // S target values per sample (targets [N, S]): S target and S prediction columns.
  const std::size_t width = p.index.empty() ? 1 : std::max<std::size_t>(1, p.target.size() / p.index.size());
  auto suffix = [&](std::size_t s) { return width > 1 ? "_" + std::to_string(s + 1) : std::string(); };
  out << "index";
  for (std::size_t s = 0; s < width; ++s) out << ",target" << suffix(s);
  for (std::size_t s = 0; s < width; ++s) out << ",prediction" << suffix(s);
  out << ",loss\n";
  for (std::size_t i = 0; i < p.index.size(); ++i) {
    out << p.index[i];
    for (std::size_t s = 0; s < width; ++s) out << "," << p.target[i * width + s];
    for (std::size_t s = 0; s < width; ++s) out << "," << p.outputs[i * width + s];
    out << "," << p.loss[i] << "\n";
  }
  return out.str();
}

std::string predictions_file_name(const TaskOutcome& outcome, bool in_search) {
  return (in_search ? "trial" + std::to_string(outcome.trial) + "_" : std::string()) +
         split_name(outcome.repeat, outcome.fold) + ".csv";
}

OutcomeCounts count_outcomes(const std::vector<TaskOutcome>& outcomes) {
  OutcomeCounts counts;
  for (const auto& o : outcomes) ++(o.ok() ? counts.ok : counts.failed);
  return counts;
}

CvReports render_cv_reports(const CvReportInput& in, const std::vector<TaskOutcome>& outcomes,
                            const TrialSummary& summary) {
  json::object report = with_format("hpctrain-cv-report", in.header);
  report["folds_detail"] = outcome_rows(outcomes);
  report["summary"] = to_json(summary);
  CvReports out;
  out.report_json = pretty_json(report);
  out.folds_csv = cv_folds_csv(outcomes, fold_table_metrics(in.classification));
  out.summary_md = cv_summary_md(in, outcomes, summary);
  return out;
}

void write_cv_reports(const std::string& run_dir, const CvReports& reports) {
  write_file_atomic(run_dir + "/cv_report.json", reports.report_json);
  write_file_atomic(run_dir + "/cv_folds.csv", reports.folds_csv);
  write_file_atomic(run_dir + "/cv_summary.md", reports.summary_md);
}

SearchReports render_search_reports(const SearchReportInput& in, const std::vector<TrialPlan>& trials,
                                    const std::vector<int>& members, const std::vector<TaskOutcome>& outcomes,
                                    const std::vector<TrialStanding>& standings) {
  const std::vector<int> order = leaderboard_order(in, members, standings);
  SearchReports out;
  out.best_trial = order.empty() ? 0 : order.front();
  const std::string& metric = in.metric;
  std::ostringstream md, csv, failures;
  csv.precision(10);
  csv << "rank,trial,parameters," << metric << "_mean," << metric
      << "_std,rung,epochs,folds_ok,folds_failed,train_seconds,samples_per_s,model_parameters,status\n";
  md << "# Search leaderboard: " << in.method << " search, metric `" << metric << "` ("
     << (in.lower_is_better ? "lower" : "higher") << " is better), "
     << (in.use_cv ? std::to_string(in.folds) + "-fold cross-validation" : std::string("holdout")) << "\n\n"
     << "| rank | trial | parameters | " << metric << " | rung | time (s) | samples/s | model parameters | status |\n"
     << "|---|---|---|---|---|---|---|---|---|\n";
  json::array board;
  int position = 0;
  for (int t : order) {
    ++position;
    const TrialPlan& tp = trials[static_cast<std::size_t>(t)];
    const TrialStanding& st = standings[static_cast<std::size_t>(t)];
    const LeaderboardRow row = leaderboard_row(tp.trial.id, st.reached, outcomes);
    const double mean = summary_mean(st.summary, metric), sd = summary_std(st.summary, metric);
    const double seconds = summary_mean(st.summary, "train_seconds");
    const double throughput = summary_mean(st.summary, "samples_per_s");
    const std::string params = describe_assignments(tp.trial.assignments);
    const std::string status = row.status();
    board.push_back(json::object{{"rank", position},
                                 {"trial", tp.trial.id},
                                 {"parameters", tp.trial.assignments},
                                 {"metric", metric},
                                 {"mean", number_or_null(mean)},
                                 {"std", number_or_null(sd)},
                                 {"rung", st.reached},
                                 {"epochs", row.epochs},
                                 {"folds_ok", row.ok},
                                 {"folds_failed", row.failed},
                                 {"summary", to_json(st.summary)},
                                 {"model_parameters", row.parameters},
                                 {"status", status}});
    if (!row.first_error.empty()) failures << "- trial " << tp.trial.id << ": " << row.first_error << "\n";
    csv << position << "," << tp.trial.id << "," << csv_quoted(params) << ","
        << (std::isfinite(mean) ? fmt(mean, "%.6f") : "") << "," << (std::isfinite(sd) ? fmt(sd, "%.6f") : "") << ","
        << st.reached << "," << row.epochs << "," << row.ok << "," << row.failed << "," << fmt(seconds, "%.3f") << ","
        << fmt(throughput, "%.1f") << "," << row.parameters << ",\"" << status << "\"\n";
    md << "| " << position << " | " << tp.trial.id << " | `" << params << "` | " << fmt(mean)
       << (std::isfinite(sd) ? " ± " + fmt(sd) : std::string()) << " | " << st.reached << " | " << fmt(seconds, "%.1f")
       << " | " << fmt(throughput, "%.0f") << " | " << row.parameters << " | " << status << " |\n";
  }
  if (!failures.str().empty()) md << "\nFailures (the first error of each trial):\n\n" << failures.str();
  json::object report = with_format("hpctrain-search-report", in.header);
  report["method"] = in.method;
  report["metric"] = metric;
  report["lower_is_better"] = in.lower_is_better;
  report["leaderboard"] = std::move(board);
  if (in.halving) report["rungs"] = in.rungs;
  for (const auto& kv : in.schedule) report[kv.key()] = kv.value();
  report["tasks"] = outcome_rows(outcomes);
  report["best_trial"] = trials[static_cast<std::size_t>(out.best_trial)].trial.id;
  out.report_json = pretty_json(report);
  out.leaderboard_csv = csv.str();
  out.leaderboard_md = md.str();
  out.best_config_json = pretty_json(trials[static_cast<std::size_t>(out.best_trial)].config_json);
  return out;
}

void write_search_reports(const std::string& run_dir, const SearchReports& reports) {
  write_file_atomic(run_dir + "/search_report.json", reports.report_json);
  write_file_atomic(run_dir + "/leaderboard.csv", reports.leaderboard_csv);
  write_file_atomic(run_dir + "/leaderboard.md", reports.leaderboard_md);
  write_file_atomic(run_dir + "/best_config.json", reports.best_config_json);
}

}  // namespace hpctrain
