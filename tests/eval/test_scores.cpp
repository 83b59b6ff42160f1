// Metrics against scikit-learn 1.9.1 and SciPy 1.17.1: the reference values below were
// computed with them (accuracy_score, balanced_accuracy_score, precision/recall/f1 with
// average="macro"/"weighted" and zero_division=0, the regression metrics, pearsonr,
// scipy.stats.t.ppf and t.interval) on the same inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "eval/Scores.hpp"

using namespace hpctrain;

namespace {
constexpr double kTol = 1e-12;
}

TEST(Scores, ClassificationWithEveryClassPresent) {
  // y = [0,0,0,1,1,2,2,2,2,1], pred = [0,1,0,1,2,2,2,0,2,1]
  const auto s = classification_scores({2, 1, 0, 0, 2, 1, 1, 0, 3}, 3);
  EXPECT_EQ(s.count, 10);
  EXPECT_NEAR(s.accuracy, 0.7, kTol);
  EXPECT_NEAR(s.balanced_accuracy, 0.6944444444444443, kTol);
  EXPECT_NEAR(s.precision_macro, 0.6944444444444443, kTol);
  EXPECT_NEAR(s.recall_macro, 0.6944444444444443, kTol);
  EXPECT_NEAR(s.f1_macro, 0.6944444444444443, kTol);
  EXPECT_NEAR(s.precision_weighted, 0.7, kTol);
  EXPECT_NEAR(s.recall_weighted, 0.7, kTol);
  EXPECT_NEAR(s.f1_weighted, 0.7, kTol);
  EXPECT_EQ(s.support, (std::vector<std::int64_t>{3, 3, 4}));
}

TEST(Scores, ClassesNeverPredictedOnlyPredictedAndAbsent) {
  // 5 classes: 2 is never predicted, 3 is predicted but never true, 4 appears nowhere.
  // y = [0,0,1,1,2,2,0,1], pred = [0,3,1,0,1,0,0,3]
  const std::vector<std::int64_t> cm{2, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const auto s = classification_scores(cm, 5);
  EXPECT_NEAR(s.accuracy, 0.375, kTol);
  EXPECT_NEAR(s.balanced_accuracy, 0.3333333333333333, kTol);
  EXPECT_NEAR(s.precision_macro, 0.25, kTol);
  EXPECT_NEAR(s.recall_macro, 0.25, kTol);
  EXPECT_NEAR(s.f1_macro, 0.24285714285714285, kTol);
  EXPECT_NEAR(s.precision_weighted, 0.375, kTol);
  EXPECT_NEAR(s.recall_weighted, 0.375, kTol);
  EXPECT_NEAR(s.f1_weighted, 0.3642857142857143, kTol);
  EXPECT_EQ(s.precision[2], 0.0);  // undefined: never predicted
  EXPECT_EQ(s.recall[3], 0.0);     // undefined: never true
}

TEST(Scores, Regression) {
  const auto s = regression_scores({3.0, -0.5, 2.0, 7.0, 4.2}, {2.5, 0.0, 2.1, 7.8, 3.9});
  EXPECT_NEAR(s.mse, 0.24799999999999994, kTol);
  EXPECT_NEAR(s.rmse, 0.49799598391954925, kTol);
  EXPECT_NEAR(s.mae, 0.44000000000000006, kTol);
  EXPECT_NEAR(s.r2, 0.9594665271966527, kTol);
  EXPECT_NEAR(s.pearson, 0.9828572286779362, kTol);
}

TEST(Scores, RegressionWithConstantTargets) {
  EXPECT_EQ(regression_scores({2, 2, 2}, {2, 2, 2}).r2, 1.0);
  EXPECT_EQ(regression_scores({2, 2, 2}, {2, 2, 3}).r2, 0.0);
  EXPECT_TRUE(std::isnan(regression_scores({2, 2, 2}, {1, 2, 3}).pearson));
}

TEST(Scores, StudentTQuantileMatchesScipy) {
  const std::vector<std::pair<double, std::vector<double>>> table = {
      {1, {3.0776835371752544, 12.706204736174694, 63.656741162871526}},
      {2, {1.8856180831641272, 4.302652729749462, 9.924843200918287}},
      {3, {1.637744353696209, 3.1824463052837078, 5.840909309733355}},
      {4, {1.533206274058944, 2.7764451051977934, 4.604094871349992}},
      {9, {1.3830287383966329, 2.262157162798205, 3.249835541592126}},
      {29, {1.311433647301551, 2.045229642132703, 2.756385903670605}},
      {100, {1.290074761346516, 1.9839715185235518, 2.6258905214380173}},
      {999, {1.2823995700373971, 1.9623414611334493, 2.5807596372676365}},
  };
  const double p[] = {0.9, 0.975, 0.995};
  for (const auto& [df, q] : table) {
    for (int i = 0; i < 3; ++i) {
      EXPECT_NEAR(student_t_quantile(p[i], df), q[i], 1e-9 * q[i]) << "df " << df << " p " << p[i];
      EXPECT_NEAR(student_t_quantile(1 - p[i], df), -q[i], 1e-9 * q[i]) << "df " << df;
    }
  }
  EXPECT_EQ(student_t_quantile(0.5, 7), 0.0);
}

TEST(Scores, SummaryMeanStdAndInterval) {
  const auto s = summarize({0.91, 0.905, 0.912, 0.899, 0.915});
  EXPECT_EQ(s.n, 5);
  EXPECT_NEAR(s.mean, 0.9082000000000001, kTol);
  EXPECT_NEAR(s.std, 0.006300793600809351, kTol);
  EXPECT_NEAR(s.ci95_low, 0.9003765314257625, 1e-10);
  EXPECT_NEAR(s.ci95_high, 0.9160234685742378, 1e-10);
  const auto one = summarize({0.5});
  EXPECT_EQ(one.mean, 0.5);
  EXPECT_TRUE(std::isnan(one.std));
  const auto j = to_json(one);
  EXPECT_TRUE(j.at("std").is_null());
  EXPECT_TRUE(j.at("ci95").as_array()[0].is_null());
}
