// Successive halving as a pure function of a rung's outcomes: the promoted trials, the
// metric's direction, ties, incomplete and failed trials, and the standings they leave.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "experiment/Halving.hpp"
#include "experiment/ScoringMetric.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

using namespace hpctrain;

namespace {

TaskOutcome ok(int trial, int fold, const char* metric, double value) {
  TaskOutcome o;
  o.trial = trial;
  o.fold = fold;
  o.status = TaskStatus::Ok;
  o.metrics = boost::json::object{{"count", 10}, {metric, value}};
  o.train_seconds = 1;
  o.samples_per_s = 100;
  return o;
}

TaskOutcome failed(int trial, int fold) {
  TaskOutcome o;
  o.trial = trial;
  o.fold = fold;
  o.status = TaskStatus::Failed;
  o.error = "boom";
  return o;
}

// Every trial of `values` scored on two folds (value per trial, the same on both).
std::vector<TaskOutcome> two_folds(const char* metric, const std::vector<double>& values) {
  std::vector<TaskOutcome> out;
  for (std::size_t t = 0; t < values.size(); ++t) {
    for (int f = 0; f < 2; ++f) out.push_back(ok(static_cast<int>(t), f, metric, values[t]));
  }
  return out;
}

}  // namespace

TEST(Halving, HigherIsBetterKeepsTheBestHalf) {
  const auto scores = score_rung({0, 1, 2, 3}, two_folds("accuracy", {0.5, 0.875, 0.25, 0.75}), "accuracy", 2);
  ASSERT_EQ(scores.size(), 4u);
  EXPECT_EQ(scores[1].score, 0.875);
  EXPECT_TRUE(scores[1].complete);
  EXPECT_EQ(promote(scores, lower_is_better("accuracy"), 2), (std::vector<int>{1, 3}));
  EXPECT_EQ(rank_rung(scores, false), (std::vector<int>{1, 3, 0, 2}));
}

TEST(Halving, LowerIsBetterForErrors) {
  const auto scores = score_rung({0, 1, 2, 3}, two_folds("rmse", {0.5, 0.875, 0.25, 0.75}), "rmse", 2);
  EXPECT_EQ(promote(scores, lower_is_better("rmse"), 2), (std::vector<int>{2, 0}));
}

TEST(Halving, TiesGoToTheLowerTrialIndex) {
  const auto scores = score_rung({0, 1, 2, 3}, two_folds("accuracy", {0.5, 0.75, 0.75, 0.75}), "accuracy", 2);
  EXPECT_EQ(promote(scores, false, 2), (std::vector<int>{1, 2}));
  EXPECT_EQ(promote(scores, false, 3), (std::vector<int>{1, 2}));  // ceil(4 / 3) = 2
  EXPECT_EQ(promote(scores, false, 4), (std::vector<int>{1}));
}

TEST(Halving, IncompleteRanksBelowCompleteAndFailedIsNotRanked) {
  std::vector<TaskOutcome> outcomes = two_folds("accuracy", {0.5, 0.25});
  outcomes.push_back(ok(2, 0, "accuracy", 0.875));  // its other fold failed: incomplete
  outcomes.push_back(failed(2, 1));
  outcomes.push_back(failed(3, 0));  // every fold failed: no score
  outcomes.push_back(failed(3, 1));
  const auto scores = score_rung({0, 1, 2, 3}, outcomes, "accuracy", 2);
  EXPECT_FALSE(scores[2].complete);
  EXPECT_EQ(scores[2].score, 0.875);
  EXPECT_FALSE(scores[3].any_ok);
  EXPECT_TRUE(std::isnan(scores[3].score));
  EXPECT_EQ(rank_rung(scores, false), (std::vector<int>{0, 1, 2}));
  // Only ranked trials go on: of 3 ranked, eta 1 keeps them all but never the failed one.
  EXPECT_EQ(promote(scores, false, 1), (std::vector<int>{0, 1, 2}));
}

TEST(Halving, AnUndefinedMetricOnAFoldMakesTheTrialIncomplete) {
  std::vector<TaskOutcome> outcomes = two_folds("pearson", {0.5, 0.25});
  outcomes[1].metrics["pearson"] = nullptr;  // constant predictions on fold 1 of trial 0
  const auto scores = score_rung({0, 1}, outcomes, "pearson", 2);
  EXPECT_FALSE(scores[0].complete);
  EXPECT_EQ(summary_count(scores[0].summary, "pearson"), 1);
  EXPECT_EQ(rank_rung(scores, false), (std::vector<int>{1, 0}));
}

TEST(Halving, ScoresOnlyTheTrialsOfTheRound) {
  // Survivors 3 and 1 of an earlier rung, in that order; the others' outcomes are ignored.
  const auto scores = score_rung({3, 1}, two_folds("accuracy", {0.9, 0.5, 0.8, 0.25}), "accuracy", 2);
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_EQ(scores[0].trial, 3);
  EXPECT_EQ(scores[1].trial, 1);
  EXPECT_EQ(promote(scores, false, 2), (std::vector<int>{1}));
}

TEST(Halving, AFailedRungKeepsTheStandingOfTheRungBefore) {
  std::vector<TrialStanding> standings(2);
  update_standings(score_rung({0, 1}, two_folds("accuracy", {0.5, 0.75}), "accuracy", 2), 0, standings);
  EXPECT_EQ(standings[1].reached, 0);
  EXPECT_FALSE(standings[1].incomplete);
  std::vector<TaskOutcome> rung1 = {ok(0, 0, "accuracy", 0.625), ok(0, 1, "accuracy", 0.625), failed(1, 0),
                                    failed(1, 1)};
  update_standings(score_rung({0, 1}, rung1, "accuracy", 2), 1, standings);
  EXPECT_EQ(standings[0].reached, 1);
  EXPECT_EQ(summary_mean(standings[0].summary, "accuracy"), 0.625);
  EXPECT_EQ(standings[1].reached, 0);
  EXPECT_EQ(summary_mean(standings[1].summary, "accuracy"), 0.75);
}

TEST(Halving, RungRecordLayout) {
  std::vector<TaskOutcome> outcomes = two_folds("accuracy", {0.5});
  outcomes.push_back(failed(1, 0));
  const auto scores = score_rung({0, 1}, outcomes, "accuracy", 2);
  EXPECT_EQ(compact_json(rung_record(2, 4, scores)),
            R"({"rung":2,"epochs":4,"trials":[{"trial":0,"score":0.5,"complete":true},)"
            R"({"trial":1,"score":null,"complete":false}]})");
}

TEST(ScoringMetric, AutoAndDirectionAndTask) {
  EXPECT_EQ(resolve_search_metric("auto", true), "accuracy");
  EXPECT_EQ(resolve_search_metric("auto", false), "rmse");
  EXPECT_EQ(resolve_search_metric("loss", false), "loss");
  EXPECT_EQ(resolve_search_metric("f1_macro", true), "f1_macro");
  EXPECT_THROW(resolve_search_metric("r2", true), ConfigError);
  EXPECT_THROW(resolve_search_metric("accuracy", false), ConfigError);
  for (const char* m : {"loss", "mse", "rmse", "mae"}) EXPECT_TRUE(lower_is_better(m)) << m;
  for (const char* m : {"accuracy", "f1_macro", "r2", "pearson"}) EXPECT_FALSE(lower_is_better(m)) << m;
}
