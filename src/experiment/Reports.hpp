#pragma once
// What rank 0 (or search-merge) writes about an experiment, rendered as text from the
// outcomes alone so that each file's layout can be tested without running anything:
// folds.json, predictions/*.csv, cv_report.json, cv_folds.csv, cv_summary.md,
// search_report.json, leaderboard.csv, leaderboard.md and best_config.json
// (docs/cv-and-search.md, "Outputs").
#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "config/Config.hpp"
#include "experiment/ExperimentPlan.hpp"
#include "experiment/FoldPlan.hpp"
#include "experiment/TaskOutcome.hpp"
#include "experiment/TrialSummary.hpp"

namespace hpctrain {

// folds.json: the fold plan of `train_samples` rows drawn from cv.seed `seed`.
std::string folds_json(const FoldPlan& plan, std::int64_t seed, std::int64_t train_samples);

// One row per held-out sample. num_classes > 0: index,label,prediction,loss,score_0..; else
// index,target(_s),prediction(_s),loss with S columns each for S target values per sample.
std::string predictions_csv(const HeldOutPredictions& predictions, std::int64_t num_classes);
// "trialT_" (in a search) + split_name + ".csv".
std::string predictions_file_name(const TaskOutcome& outcome, bool in_search);

// The fields every report starts with (task, data, scoring, ..., wall_seconds): built by
// the caller, in the order written.
using ReportHeader = boost::json::object;

// Counts of outcomes by status: ok, and everything else.
struct OutcomeCounts {
  int ok = 0, failed = 0;
};
OutcomeCounts count_outcomes(const std::vector<TaskOutcome>& outcomes);

// A plain cross-validation of one config.
struct CvReportInput {
  const Config* config = nullptr;  // cv, data.path, model.name, train.epochs
  bool classification = true;
  bool stratified = false;       // of the fold plan
  std::string scheme = "kfold";  // of the fold plan
  std::int64_t gap = 0;          // of the fold plan
  int world_size = 1, groups = 1, ranks_per_group = 1;
  double wall_seconds = 0;
  ReportHeader header;
};
struct CvReports {
  std::string report_json;  // cv_report.json
  std::string folds_csv;    // cv_folds.csv
  std::string summary_md;   // cv_summary.md, also what rank 0 prints
};
CvReports render_cv_reports(const CvReportInput& in, const std::vector<TaskOutcome>& outcomes,
                            const TrialSummary& summary);
void write_cv_reports(const std::string& run_dir, const CvReports& reports);

// A search (one job, a shard of one, or merged shards).
struct SearchReportInput {
  std::string method;  // search.method
  std::string metric;  // resolved (never auto)
  bool lower_is_better = false;
  bool use_cv = false;
  std::int64_t folds = 0;  // cv.folds
  bool halving = false;    // halving or asha: the rungs record
  ReportHeader header;
  boost::json::array rungs;  // halving, asha: rung_record of each rung
  // asha, tpe: "promotions" (asha), "proposals" (tpe) and "events", written after the rungs.
  boost::json::object schedule;
};
struct SearchReports {
  std::string report_json;       // search_report.json
  std::string leaderboard_csv;   // leaderboard.csv
  std::string leaderboard_md;    // leaderboard.md, also what is printed
  std::string best_config_json;  // best_config.json: the best trial's config
  int best_trial = 0;
};
// `members`: the trials reported on (indices into `trials`); `standings` indexed by trial.
// Ranked by the rung reached, then complete before incomplete, then the metric in its
// direction, then trial index.
SearchReports render_search_reports(const SearchReportInput& in, const std::vector<TrialPlan>& trials,
                                    const std::vector<int>& members, const std::vector<TaskOutcome>& outcomes,
                                    const std::vector<TrialStanding>& standings);
void write_search_reports(const std::string& run_dir, const SearchReports& reports);

}  // namespace hpctrain
