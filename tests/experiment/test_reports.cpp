// The reports rendered from fixed outcomes, compared with the text each file must hold:
// cv_report.json, cv_folds.csv, cv_summary.md, the leaderboard (CSV, Markdown, JSON),
// best_config.json, folds.json and the prediction files (docs/cv-and-search.md, "Outputs";
// analysis/verify_cv_report.py and analysis/plot_cv.py read them).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "experiment/Halving.hpp"
#include "experiment/Reports.hpp"
#include "experiment/ScoringMetric.hpp"
#include "util/Json.hpp"

using namespace hpctrain;
namespace json = boost::json;

namespace {

TaskOutcome ok_fold(int trial, int fold, int group, json::object metrics) {
  TaskOutcome o;
  o.trial = trial;
  o.fold = fold;
  o.epochs = 3;
  o.group = group;
  o.ranks = 1;
  o.train_samples = 6;
  o.held_out_samples = 4;
  o.status = TaskStatus::Ok;
  o.metrics = std::move(metrics);
  o.train_seconds = 1.5;
  o.samples_per_s = 40;
  o.parameters = 100;
  o.steps = 3;
  o.stop_reason = "completed";
  o.wall_seconds = 2;
  o.rung = 0;
  return o;
}

TaskOutcome failed_fold(int trial, int fold, int group, const std::string& error) {
  TaskOutcome o;
  o.trial = trial;
  o.fold = fold;
  o.epochs = 3;
  o.group = group;
  o.ranks = 1;
  o.train_samples = 6;
  o.held_out_samples = 4;
  o.status = TaskStatus::Failed;
  o.error = error;
  o.wall_seconds = 0.5;
  o.rung = 0;
  return o;
}

TrialSummary summary_of(const std::vector<TaskOutcome>& outcomes) {
  std::vector<const TaskOutcome*> ok;
  for (const auto& o : outcomes) {
    if (o.ok()) ok.push_back(&o);
  }
  return summarize_trial(ok);
}

Config cv_config(std::int64_t folds) {
  Config c;
  c.data.path = "data/x.h5";
  c.cv.folds = folds;
  c.model.name = "cnn";
  c.train.epochs = 3;
  return c;
}

CvReportInput cv_input(const Config& config) {
  CvReportInput in;
  in.config = &config;
  in.stratified = true;
  in.world_size = 2;
  in.groups = 2;
  in.wall_seconds = 12.34;
  in.header = ReportHeader{{"task", "classification"}, {"data", "data/x.h5"}};
  return in;
}

// One fold's block of cv_report.json's folds_detail.
std::string fold_json(int fold, int group) {
  const std::string f = std::to_string(fold), g = std::to_string(group);
  return "    {\n"
         "      \"trial\": 0,\n      \"repeat\": 0,\n      \"fold\": " +
         f +
         ",\n      \"epochs\": 3,\n"
         "      \"group\": " +
         g +
         ",\n      \"ranks\": 1,\n      \"train_samples\": 6,\n"
         "      \"held_out_samples\": 4,\n      \"status\": \"ok\",\n"
         "      \"confusion\": [\n        [2,0],\n        [1,1]\n      ],\n"
         "      \"metrics\": {\n        \"count\": 4,\n        \"accuracy\": 0.75,\n        \"loss\": 0.5\n      },\n"
         "      \"train_seconds\": 1.5,\n      \"samples_per_s\": 40,\n      \"parameters\": 100,\n"
         "      \"steps\": 3,\n      \"stop_reason\": \"completed\",\n"
         "      \"epoch_records\": [\n        {\n          \"epoch\": 1,\n          \"train_loss\": 0.5\n        }\n"
         "      ],\n      \"wall_seconds\": 2,\n      \"rung\": 0\n    }";
}

std::string summary_json(const char* name, const char* value, bool last) {
  return std::string("    \"") + name + "\": {\n      \"n\": 2,\n      \"mean\": " + value +
         ",\n      \"std\": 0,\n      \"ci95\": [" + value + "," + value + "]\n    }" + (last ? "\n" : ",\n");
}

TrialPlan trial(int id, double lr) {
  TrialPlan t;
  t.trial.id = id;
  t.trial.assignments = json::object{{"optimizer.lr", lr}};
  t.config_json = json::object{{"optimizer", json::object{{"lr", lr}}}};
  return t;
}

json::object accuracy(double value) {
  return json::object{{"count", 4}, {"accuracy", value}, {"loss", 0.5}};
}

// Three trials on 2 folds: 0 scores 0.5, 1 scores 0.75, 2 has a failed fold and 0.875.
struct SearchFixture {
  std::vector<TrialPlan> trials = {trial(0, 0.1), trial(1, 0.01), trial(2, 0.001)};
  std::vector<TaskOutcome> outcomes = {ok_fold(0, 0, 0, accuracy(0.5)),    ok_fold(0, 1, 1, accuracy(0.5)),
                                       ok_fold(1, 0, 0, accuracy(0.75)),   ok_fold(1, 1, 1, accuracy(0.75)),
                                       failed_fold(2, 0, 0, "boom \"x\""), ok_fold(2, 1, 1, accuracy(0.875))};
  std::vector<TrialStanding> standings = std::vector<TrialStanding>(3);
  SearchReportInput in;
  explicit SearchFixture(const std::string& metric) {
    for (auto& o : outcomes) {
      o.epochs = 2;
      o.parameters = 1234;
      o.train_seconds = 2;
      o.samples_per_s = 100;
      if (o.ok() && metric != "accuracy") o.metrics[metric] = o.metrics.at("accuracy");
    }
    update_standings(score_rung({0, 1, 2}, outcomes, metric, 2), 0, standings);
    in.method = "grid";
    in.metric = metric;
    in.lower_is_better = lower_is_better(metric);
    in.use_cv = true;
    in.folds = 2;
    in.header = ReportHeader{{"task", "classification"}, {"tasks_ok", 5}, {"tasks_failed", 1}};
  }
  SearchReports render() const { return render_search_reports(in, trials, {0, 1, 2}, outcomes, standings); }
};

std::vector<std::string> keys_of(const json::object& o) {
  std::vector<std::string> keys;
  for (const auto& kv : o) keys.emplace_back(kv.key());
  return keys;
}

}  // namespace

TEST(Reports, CvReportJson) {
  const Config config = cv_config(2);
  std::vector<TaskOutcome> outcomes = {ok_fold(0, 0, 0, accuracy(0.75)), ok_fold(0, 1, 1, accuracy(0.75))};
  for (auto& o : outcomes) {
    o.confusion = std::vector<std::vector<std::int64_t>>{{2, 0}, {1, 1}};
    o.epoch_records = json::array{json::object{{"epoch", 1}, {"train_loss", 0.5}}};
  }
  const CvReports r = render_cv_reports(cv_input(config), outcomes, summary_of(outcomes));
  EXPECT_EQ(r.report_json,
            "{\n  \"format\": \"hpctrain-cv-report\",\n  \"format_version\": 1,\n  \"task\": \"classification\",\n"
            "  \"data\": \"data/x.h5\",\n  \"folds_detail\": [\n" +
                fold_json(0, 0) + ",\n" + fold_json(1, 1) + "\n  ],\n  \"summary\": {\n" +
                summary_json("accuracy", "0.75", false) + summary_json("loss", "0.5", false) +
                summary_json("samples_per_s", "40", false) + summary_json("train_seconds", "1.5", true) + "  }\n}\n");
}

TEST(Reports, CvFoldsCsvAndSummaryMarkdown) {
  const Config config = cv_config(3);
  const json::object metrics{
      {"count", 4},           {"accuracy", 0.75},    {"balanced_accuracy", 0.75},  {"precision_macro", 0.5},
      {"recall_macro", 0.5},  {"f1_macro", nullptr}, {"precision_weighted", 0.25}, {"recall_weighted", 0.75},
      {"f1_weighted", 0.375}, {"loss", 0.5}};
  const std::vector<TaskOutcome> outcomes = {ok_fold(0, 0, 0, metrics), ok_fold(0, 1, 1, metrics),
                                             failed_fold(0, 2, 1, "bad \"value\"")};
  const CvReports r = render_cv_reports(cv_input(config), outcomes, summary_of(outcomes));
  EXPECT_EQ(r.folds_csv,
            "repeat,fold,status,group,train_samples,held_out_samples,loss,accuracy,balanced_accuracy,"
            "precision_macro,recall_macro,f1_macro,precision_weighted,recall_weighted,f1_weighted,train_seconds,"
            "samples_per_s,error\n"
            "0,0,ok,0,6,4,0.5,0.75,0.75,0.5,0.5,,0.25,0.75,0.375,1.500,40.0,\n"
            "0,1,ok,1,6,4,0.5,0.75,0.75,0.5,0.5,,0.25,0.75,0.375,1.500,40.0,\n"
            "0,2,failed,1,6,4" +
                std::string(12, ',') + "\"bad 'value'\"\n");
  EXPECT_EQ(r.summary_md,
            "# Cross-validation: data/x.h5\n\n"
            "3-fold stratified cross-validation, model `cnn`, 3 epoch(s); 2 ranks in 2 group(s) of 1; 2 fold(s) ok, "
            "1 failed; 12.3 s.\n\n"
            "| metric | mean | std | 95% CI |\n|---|---|---|---|\n"
            "| loss | 0.5000 | 0.0000 | 0.5000 .. 0.5000 |\n"
            "| accuracy | 0.7500 | 0.0000 | 0.7500 .. 0.7500 |\n"
            "| balanced_accuracy | 0.7500 | 0.0000 | 0.7500 .. 0.7500 |\n"
            "| precision_macro | 0.5000 | 0.0000 | 0.5000 .. 0.5000 |\n"
            "| recall_macro | 0.5000 | 0.0000 | 0.5000 .. 0.5000 |\n"
            "| precision_weighted | 0.2500 | 0.0000 | 0.2500 .. 0.2500 |\n"
            "| recall_weighted | 0.7500 | 0.0000 | 0.7500 .. 0.7500 |\n"
            "| f1_weighted | 0.3750 | 0.0000 | 0.3750 .. 0.3750 |\n"
            "| train_seconds | 1.5000 | 0.0000 | 1.5000 .. 1.5000 |\n"
            "| samples_per_s | 40.0000 | 0.0000 | 40.0000 .. 40.0000 |\n"
            "\nFold repeat0_fold2 failed: bad \"value\"\n");
}

TEST(Reports, CvSummaryOfTimeOrderedFoldsAndOneFold) {
  Config config = cv_config(3);
  config.cv.repeats = 1;
  CvReportInput in = cv_input(config);
  in.stratified = false;
  in.scheme = "time";
  in.gap = 5;
  in.classification = false;
  const json::object metrics{{"count", 4}, {"mse", 0.25}, {"rmse", 0.5}, {"loss", 0.125}};
  const std::vector<TaskOutcome> outcomes = {ok_fold(0, 0, 0, metrics)};
  const CvReports r = render_cv_reports(in, outcomes, summary_of(outcomes));
  EXPECT_EQ(r.summary_md,
            "# Cross-validation: data/x.h5\n\n"
            "3-fold time-ordered (forward-chaining, gap 5) cross-validation, model `cnn`, 3 epoch(s); 2 ranks in 2 "
            "group(s) of 1; 1 fold(s) ok, 0 failed; 12.3 s.\n\n"
            "| metric | mean | std | 95% CI |\n|---|---|---|---|\n"
            "| loss | 0.1250 | n/a | n/a |\n"
            "| mse | 0.2500 | n/a | n/a |\n"
            "| rmse | 0.5000 | n/a | n/a |\n"
            "| train_seconds | 1.5000 | n/a | n/a |\n"
            "| samples_per_s | 40.0000 | n/a | n/a |\n");
  EXPECT_EQ(r.folds_csv,
            "repeat,fold,status,group,train_samples,held_out_samples,loss,mse,rmse,mae,r2,pearson,train_seconds,"
            "samples_per_s,error\n0,0,ok,0,6,4,0.125,0.25,0.5,,,,1.500,40.0,\n");
}

TEST(Reports, LeaderboardHigherIsBetter) {
  const SearchReports r = SearchFixture("accuracy").render();
  EXPECT_EQ(r.best_trial, 1);
  EXPECT_EQ(r.leaderboard_csv,
            "rank,trial,parameters,accuracy_mean,accuracy_std,rung,epochs,folds_ok,folds_failed,train_seconds,"
            "samples_per_s,model_parameters,status\n"
            "1,1,\"optimizer.lr=0.01\",0.750000,0.000000,0,2,2,0,2.000,100.0,1234,\"ok\"\n"
            "2,0,\"optimizer.lr=0.1\",0.500000,0.000000,0,2,2,0,2.000,100.0,1234,\"ok\"\n"
            "3,2,\"optimizer.lr=0.001\",0.875000,,0,2,1,1,2.000,100.0,1234,\"incomplete (1 of 2 folds)\"\n");
  EXPECT_EQ(r.leaderboard_md,
            "# Search leaderboard: grid search, metric `accuracy` (higher is better), 2-fold cross-validation\n\n"
            "| rank | trial | parameters | accuracy | rung | time (s) | samples/s | model parameters | status |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
            "| 1 | 1 | `optimizer.lr=0.01` | 0.7500 ± 0.0000 | 0 | 2.0 | 100 | 1234 | ok |\n"
            "| 2 | 0 | `optimizer.lr=0.1` | 0.5000 ± 0.0000 | 0 | 2.0 | 100 | 1234 | ok |\n"
            "| 3 | 2 | `optimizer.lr=0.001` | 0.8750 | 0 | 2.0 | 100 | 1234 | incomplete (1 of 2 folds) |\n"
            "\nFailures (the first error of each trial):\n\n- trial 2: boom \"x\"\n");
  EXPECT_EQ(r.best_config_json, "{\n  \"optimizer\": {\n    \"lr\": 0.01\n  }\n}\n");
}

TEST(Reports, LeaderboardLowerIsBetter) {
  const SearchReports r = SearchFixture("rmse").render();
  EXPECT_EQ(r.best_trial, 0);
  const json::object report = json::parse(r.report_json).as_object();
  std::vector<std::int64_t> order;
  for (const auto& row : report.at("leaderboard").as_array()) order.push_back(row.at("trial").as_int64());
  EXPECT_EQ(order, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(report.at("lower_is_better"), true);
  EXPECT_NE(r.leaderboard_md.find("metric `rmse` (lower is better)"), std::string::npos);
}

TEST(Reports, SearchReportJsonLayout) {
  const SearchReports r = SearchFixture("accuracy").render();
  const json::object report = json::parse(r.report_json).as_object();
  EXPECT_EQ(keys_of(report),
            (std::vector<std::string>{"format", "format_version", "task", "tasks_ok", "tasks_failed", "method",
                                      "metric", "lower_is_better", "leaderboard", "tasks", "best_trial"}));
  const json::object& first = report.at("leaderboard").as_array().at(0).as_object();
  EXPECT_EQ(keys_of(first),
            (std::vector<std::string>{"rank", "trial", "parameters", "metric", "mean", "std", "rung", "epochs",
                                      "folds_ok", "folds_failed", "summary", "model_parameters", "status"}));
  EXPECT_EQ(compact_json(first.at("summary").at("accuracy")), R"({"n":2,"mean":0.75,"std":0,"ci95":[0.75,0.75]})");
  const json::object& third = report.at("leaderboard").as_array().at(2).as_object();
  EXPECT_TRUE(third.at("std").is_null());
  EXPECT_EQ(third.at("status"), "incomplete (1 of 2 folds)");
  EXPECT_EQ(report.at("tasks").as_array().size(), 6u);
  EXPECT_EQ(compact_json(report.at("tasks").as_array().at(4)),
            R"({"trial":2,"repeat":0,"fold":0,"epochs":2,"group":0,"ranks":1,"train_samples":6,)"
            R"("held_out_samples":4,"status":"failed","error":"boom \"x\"","wall_seconds":0.5,"rung":0})");
  EXPECT_EQ(report.at("best_trial"), 1);
}

TEST(Reports, HalvingLeaderboardNamesALaterFailedRung) {
  SearchFixture f("accuracy");
  f.in.method = "halving";
  f.in.halving = true;
  f.in.rungs = json::array{json::object{{"rung", 0}}};
  // Trial 1 went on to rung 1 and failed there: it keeps its rung-0 standing.
  for (int fold = 0; fold < 2; ++fold) {
    TaskOutcome o = failed_fold(1, fold, 0, "diverged");
    o.epochs = 4;
    o.rung = 1;
    f.outcomes.push_back(o);
  }
  const SearchReports r = f.render();
  const json::object report = json::parse(r.report_json).as_object();
  EXPECT_EQ(keys_of(report).at(9), "rungs");
  const json::object& first = report.at("leaderboard").as_array().at(0).as_object();
  EXPECT_EQ(first.at("trial"), 1);
  EXPECT_EQ(first.at("status"), "ok, failed at rung 1");
  EXPECT_EQ(first.at("folds_ok"), 2);
  EXPECT_EQ(first.at("epochs"), 2);
  EXPECT_NE(r.leaderboard_md.find("- trial 1: diverged\n"), std::string::npos) << r.leaderboard_md;
}

TEST(Reports, FoldsJson) {
  FoldPlan plan;
  plan.k = 2;
  plan.folds = {Fold{0, 0, {1, 3}, {0, 2}}, Fold{0, 1, {0, 2}, {1, 3}}};
  EXPECT_EQ(folds_json(plan, 7, 4),
            R"({"format":"hpctrain-folds","format_version":1,"k":2,"repeats":1,"stratified":false,"scheme":"kfold",)"
            R"("gap":0,"seed":7,"train_samples":4,"folds":[{"repeat":0,"fold":0,"held_out":[1,3]},)"
            R"({"repeat":0,"fold":1,"held_out":[0,2]}]})"
            "\n");
}

TEST(Reports, PredictionsCsv) {
  // Classification: the first class of highest score is the prediction (ties included).
  const HeldOutPredictions classes{{4, 9, 11}, {0, 1, 1}, {0.25, 0.125, 0.5}, {0.75, 0.25, 0.125, 0.875, 0.5, 0.5}};
  EXPECT_EQ(predictions_csv(classes, 2),
            "index,label,prediction,loss,score_0,score_1\n4,0,0,0.25,0.75,0.25\n9,1,1,0.125,0.125,0.875\n"
            "11,1,0,0.5,0.5,0.5\n");
  const HeldOutPredictions span{{1, 2}, {1, 2, 3, 4}, {0.25, 0.25}, {1.5, 2.5, 3.5, 4.5}};
  EXPECT_EQ(predictions_csv(span, 0),
            "index,target_1,target_2,prediction_1,prediction_2,loss\n1,1,2,1.5,2.5,0.25\n2,3,4,3.5,4.5,0.25\n");
  const HeldOutPredictions one{{1}, {0.1}, {0.5}, {0.25}};
  EXPECT_EQ(predictions_csv(one, 0), "index,target,prediction,loss\n1,0.10000000000000001,0.25,0.5\n");
  TaskOutcome o;
  o.trial = 3;
  o.fold = 1;
  EXPECT_EQ(predictions_file_name(o, true), "trial3_repeat0_fold1.csv");
  EXPECT_EQ(predictions_file_name(o, false), "repeat0_fold1.csv");
  o.fold = -1;
  EXPECT_EQ(predictions_file_name(o, true), "trial3_holdout.csv");
}
