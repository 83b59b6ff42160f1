// Metrics against scikit-learn 1.9.1, SciPy 1.17.1 and NumPy 2.4.6. Every reference value
// below was computed with them (accuracy_score, balanced_accuracy_score,
// precision_recall_fscore_support and f1_score with average="macro"/"weighted" and the
// default zero_division, mean_squared_error, root_mean_squared_error, mean_absolute_error,
// r2_score, pearsonr, numpy.mean/std(ddof=1), scipy.stats.t.ppf/cdf/interval) on the
// y_true/y_pred vectors noted beside each confusion matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "config/MetricCatalog.hpp"
#include "eval/Scores.hpp"

using namespace hpctrain;

namespace {

// Relative for large values, absolute near zero.
void expect_close(double actual, double expected, double tol = 1e-12) {
  if (std::isnan(expected)) {
    EXPECT_TRUE(std::isnan(actual)) << "expected NaN, got " << actual;
    return;
  }
  EXPECT_NEAR(actual, expected, tol * std::max(1.0, std::abs(expected)));
}

void expect_all_close(const std::vector<double>& actual, const std::vector<double>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    SCOPED_TRACE("index " + std::to_string(i));
    expect_close(actual[i], expected[i]);
  }
}

}  // namespace

TEST(ClassificationScores, EveryClassPresent) {
  // y_true = [0,0,0,1,1,2,2,2,2,1,0,2], y_pred = [0,1,0,1,2,2,2,0,2,1,2,2]
  const auto s = classification_scores({2, 1, 1, 0, 2, 1, 1, 0, 4}, 3);
  EXPECT_EQ(s.count, 12);
  expect_close(s.accuracy, 0.6666666666666666);
  expect_close(s.balanced_accuracy, 0.6555555555555556);
  expect_close(s.precision_macro, 0.6666666666666666);
  expect_close(s.recall_macro, 0.6555555555555556);
  expect_close(s.f1_macro, 0.6551226551226551);
  expect_close(s.precision_weighted, 0.6666666666666666);
  expect_close(s.recall_weighted, 0.6666666666666666);
  expect_close(s.f1_weighted, 0.6601731601731602);
  expect_all_close(s.precision, {0.6666666666666666, 0.6666666666666666, 0.6666666666666666});
  expect_all_close(s.recall, {0.5, 0.6666666666666666, 0.8});
  expect_all_close(s.f1, {0.5714285714285714, 0.6666666666666666, 0.7272727272727273});
  EXPECT_EQ(s.support, (std::vector<std::int64_t>{4, 3, 5}));
}

TEST(ClassificationScores, NeverPredictedOnlyPredictedAndAbsentClasses) {
  // Class 2 is never predicted, class 3 is predicted but never true, class 4 occurs in
  // neither and so is left out of the macro averages (dividing by 4, not 5).
  // y_true = [0,0,1,1,2,2,0,1,2,0], y_pred = [0,3,1,0,1,0,0,3,1,3]
  const std::vector<std::int64_t> cm{2, 0, 0, 2, 0, 1, 1, 0, 1, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const auto s = classification_scores(cm, 5);
  EXPECT_EQ(s.count, 10);
  expect_close(s.accuracy, 0.3);
  expect_close(s.balanced_accuracy, 0.27777777777777773);
  expect_close(s.precision_macro, 0.20833333333333331);
  expect_close(s.recall_macro, 0.20833333333333331);
  expect_close(s.f1_macro, 0.20833333333333331);
  expect_close(s.precision_weighted, 0.3);
  expect_close(s.recall_weighted, 0.3);
  expect_close(s.f1_weighted, 0.3);
  expect_all_close(s.precision, {0.5, 0.3333333333333333, 0.0, 0.0, 0.0});
  expect_all_close(s.recall, {0.5, 0.3333333333333333, 0.0, 0.0, 0.0});
  expect_all_close(s.f1, {0.5, 0.3333333333333333, 0.0, 0.0, 0.0});
  EXPECT_EQ(s.support, (std::vector<std::int64_t>{4, 3, 3, 0, 0}));
}

TEST(ClassificationScores, ClassOnlyPredictedCountsInMacroButNotInBalancedAccuracy) {
  // Class 3 occurs only in the predictions: its recall (0) enters recall_macro but not
  // balanced_accuracy, which averages over the classes among the true labels.
  // y_true = [0,1,1,1,2,2], y_pred = [0,3,3,1,2,0]
  const std::vector<std::int64_t> cm{1, 0, 0, 0, 0, 1, 0, 2, 1, 0, 1, 0, 0, 0, 0, 0};
  const auto s = classification_scores(cm, 4);
  expect_close(s.accuracy, 0.5);
  expect_close(s.balanced_accuracy, 0.611111111111111);
  expect_close(s.precision_macro, 0.625);
  expect_close(s.recall_macro, 0.4583333333333333);
  expect_close(s.f1_macro, 0.45833333333333326);
  expect_close(s.precision_weighted, 0.9166666666666666);
  expect_close(s.recall_weighted, 0.5);
  expect_close(s.f1_weighted, 0.5833333333333334);
  expect_all_close(s.precision, {0.5, 1.0, 1.0, 0.0});
  expect_all_close(s.recall, {1.0, 0.3333333333333333, 0.5, 0.0});
  expect_all_close(s.f1, {0.6666666666666666, 0.5, 0.6666666666666666, 0.0});
  EXPECT_EQ(s.support, (std::vector<std::int64_t>{1, 3, 2, 0}));
}

TEST(ClassificationScores, OneClassAlwaysPredicted) {
  // y_true = [1,1,2,0,2], y_pred = [1,1,1,1,1]
  const auto s = classification_scores({0, 1, 0, 0, 2, 0, 0, 2, 0}, 3);
  expect_close(s.accuracy, 0.4);
  expect_close(s.balanced_accuracy, 0.3333333333333333);
  expect_close(s.precision_macro, 0.13333333333333333);
  expect_close(s.recall_macro, 0.3333333333333333);
  expect_close(s.f1_macro, 0.19047619047619047);
  expect_close(s.precision_weighted, 0.16);
  expect_close(s.recall_weighted, 0.4);
  expect_close(s.f1_weighted, 0.22857142857142856);
  expect_all_close(s.f1, {0.0, 0.5714285714285714, 0.0});
}

TEST(ClassificationScores, NoSamplesGivesNaNAveragesAndNullJson) {
  const auto s = classification_scores(std::vector<std::int64_t>(4, 0), 2);
  EXPECT_EQ(s.count, 0);
  EXPECT_TRUE(std::isnan(s.accuracy));
  EXPECT_TRUE(std::isnan(s.f1_macro));
  EXPECT_EQ(s.precision, (std::vector<double>{0.0, 0.0}));
  const auto j = to_json(s);
  EXPECT_TRUE(j.at("accuracy").is_null());
  EXPECT_TRUE(j.at("balanced_accuracy").is_null());
  EXPECT_EQ(j.at("count").as_int64(), 0);
}

TEST(ClassificationScores, RejectsBadInput) {
  EXPECT_THROW(classification_scores({1, 2, 3}, 2), std::invalid_argument);
  EXPECT_THROW(classification_scores({}, 0), std::invalid_argument);
  EXPECT_THROW(classification_scores({1, -1, 0, 1}, 2), std::invalid_argument);
}

TEST(ClassificationScores, Json) {
  const auto j = to_json(classification_scores({2, 1, 1, 0, 2, 1, 1, 0, 4}, 3));
  for (const char* key : {"count", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                          "precision_weighted", "recall_weighted", "f1_weighted", "per_class"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j.size(), 10u);
  EXPECT_EQ(j.at("count").as_int64(), 12);
  expect_close(j.at("f1_macro").as_double(), 0.6551226551226551);
  const auto& per_class = j.at("per_class").as_object();
  EXPECT_EQ(per_class.size(), 4u);
  expect_close(per_class.at("recall").as_array().at(2).as_double(), 0.8);
  expect_close(per_class.at("f1").as_array().at(0).as_double(), 0.5714285714285714);
  expect_close(per_class.at("precision").as_array().at(1).as_double(), 0.6666666666666666);
  EXPECT_EQ(per_class.at("support").as_array().at(2).as_int64(), 5);
}

TEST(RegressionScores, Basic) {
  const auto s = regression_scores({3.0, -0.5, 2.0, 7.0, 4.2, 1.1}, {2.5, 0.0, 2.1, 7.8, 3.9, 0.7});
  EXPECT_EQ(s.count, 6);
  expect_close(s.mse, 0.2333333333333333);
  expect_close(s.rmse, 0.48304589153964794);
  expect_close(s.mae, 0.4333333333333334);
  expect_close(s.r2, 0.9588960657662948);
  expect_close(s.pearson, 0.98321618280966);
}

TEST(RegressionScores, LongVectorsUsePairwiseSums) {
  // i = 0..299: y = (37i mod 101)/7, prediction = y + ((13i mod 17) − 8)/16.
  std::vector<double> y, p;
  for (int i = 0; i < 300; ++i) {
    y.push_back((i * 37 % 101) / 7.0);
    p.push_back(y.back() + ((i * 13) % 17 - 8) / 16.0);
  }
  const auto s = regression_scores(y, p);
  expect_close(s.mse, 0.09403645833333334);
  expect_close(s.rmse, 0.3066536455568943);
  expect_close(s.mae, 0.2654166666666667);
  expect_close(s.r2, 0.9945820617740212);
  expect_close(s.pearson, 0.9972997442876376);
}

TEST(RegressionScores, ConstantTargets) {
  const auto perfect = regression_scores({2, 2, 2, 2}, {2, 2, 2, 2});
  EXPECT_EQ(perfect.r2, 1.0);
  EXPECT_EQ(perfect.mse, 0.0);
  EXPECT_TRUE(std::isnan(perfect.pearson));

  const auto imperfect = regression_scores({2, 2, 2, 2}, {2, 2, 2.5, 1});
  EXPECT_EQ(imperfect.r2, 0.0);
  expect_close(imperfect.mse, 0.3125);
  expect_close(imperfect.rmse, 0.5590169943749475);
  expect_close(imperfect.mae, 0.375);
  EXPECT_TRUE(std::isnan(imperfect.pearson));

  // Constant predictions: Pearson undefined, R² from the formula.
  const auto flat = regression_scores({1, 2, 3}, {2, 2, 2});
  EXPECT_EQ(flat.r2, 0.0);
  EXPECT_TRUE(std::isnan(flat.pearson));
}

TEST(RegressionScores, ConstantTargetsWhoseMeanRoundsAway) {
  // The mean of three 0.1s is not 0.1 in floating point, so scikit-learn's SS_tot is not
  // zero and force_finite does not apply: it returns the formula's huge negative value.
  const auto s = regression_scores({0.1, 0.1, 0.1}, {0.1, 0.1, 0.2});
  expect_close(s.r2, -1.7307656195116095e+31);
  expect_close(s.mse, 0.003333333333333334);
  expect_close(s.mae, 0.03333333333333333);
  EXPECT_TRUE(std::isnan(s.pearson));  // constant by value, whatever the rounding
}

TEST(RegressionScores, FewSamples) {
  const auto one = regression_scores({1.5}, {2.0});
  expect_close(one.mse, 0.25);
  expect_close(one.mae, 0.5);
  EXPECT_TRUE(std::isnan(one.r2));
  EXPECT_TRUE(std::isnan(one.pearson));

  const auto two = regression_scores({1.0, 2.0}, {5.0, 3.0});
  expect_close(two.mse, 8.5);
  expect_close(two.rmse, 2.9154759474226504);
  expect_close(two.r2, -33.0);
  EXPECT_EQ(two.pearson, -1.0);

  const auto none = regression_scores({}, {});
  EXPECT_EQ(none.count, 0);
  EXPECT_TRUE(std::isnan(none.mse));
  EXPECT_THROW(regression_scores({1.0}, {}), std::invalid_argument);
}

TEST(RegressionScores, Json) {
  const auto j = to_json(regression_scores({2, 2, 2, 2}, {2, 2, 2.5, 1}));
  EXPECT_EQ(j.size(), 6u);
  EXPECT_EQ(j.at("count").as_int64(), 4);
  expect_close(j.at("mse").as_double(), 0.3125);
  expect_close(j.at("rmse").as_double(), 0.5590169943749475);
  expect_close(j.at("mae").as_double(), 0.375);
  EXPECT_EQ(j.at("r2").as_double(), 0.0);
  EXPECT_TRUE(j.at("pearson").is_null());
}

TEST(PairwiseSum, MatchesNumpyBitForBit) {
  // numpy.sum(1.0 / (numpy.arange(1000) + 1)); a left-to-right sum gives ...343.
  std::vector<double> v;
  for (int i = 0; i < 1000; ++i) v.push_back(1.0 / (i + 1));
  EXPECT_EQ(pairwise_sum(v.data(), v.size()), 7.485470860550345);
  EXPECT_EQ(pairwise_sum(v.data(), 0), 0.0);
}

TEST(Summary, MeanStdAndInterval) {
  const auto s = summarize({0.91, 0.905, 0.912, 0.899, 0.915});
  EXPECT_EQ(s.n, 5);
  expect_close(s.mean, 0.9082000000000001);
  expect_close(s.std, 0.006300793600809351);
  expect_close(s.ci95_low, 0.9003765314257625);
  expect_close(s.ci95_high, 0.9160234685742378);

  const auto two = summarize({1.0, 4.0});
  expect_close(two.mean, 2.5);
  expect_close(two.std, 2.1213203435596424);
  expect_close(two.ci95_low, -16.55930710426204);
  expect_close(two.ci95_high, 21.55930710426204);

  // j = 0..29: (7j mod 11)/3 − 1
  std::vector<double> v;
  for (int j = 0; j < 30; ++j) v.push_back((j * 7 % 11) / 3.0 - 1.0);
  const auto thirty = summarize(v);
  expect_close(thirty.mean, 0.6888888888888889);
  expect_close(thirty.std, 1.0789995839531805);
  expect_close(thirty.ci95_low, 0.28598382268133465);
  expect_close(thirty.ci95_high, 1.091793955096443);
}

TEST(Summary, TooFewValuesAndConstantValues) {
  const auto one = summarize({0.5});
  EXPECT_EQ(one.n, 1);
  EXPECT_EQ(one.mean, 0.5);
  EXPECT_TRUE(std::isnan(one.std));
  EXPECT_TRUE(std::isnan(one.ci95_low));
  EXPECT_TRUE(std::isnan(one.ci95_high));

  const auto none = summarize({});
  EXPECT_EQ(none.n, 0);
  EXPECT_TRUE(std::isnan(none.mean));

  // mean ± t·0/√n: a zero-width interval (scipy's t.interval would refuse scale 0).
  const auto flat = summarize({3.0, 3.0, 3.0});
  EXPECT_EQ(flat.std, 0.0);
  EXPECT_EQ(flat.ci95_low, 3.0);
  EXPECT_EQ(flat.ci95_high, 3.0);
}

TEST(Summary, Json) {
  const auto one = to_json(summarize({0.5}));
  EXPECT_EQ(one.size(), 4u);
  EXPECT_EQ(one.at("n").as_int64(), 1);
  EXPECT_EQ(one.at("mean").as_double(), 0.5);
  EXPECT_TRUE(one.at("std").is_null());
  ASSERT_EQ(one.at("ci95").as_array().size(), 2u);
  EXPECT_TRUE(one.at("ci95").as_array()[0].is_null());
  EXPECT_TRUE(one.at("ci95").as_array()[1].is_null());

  const auto two = to_json(summarize({1.0, 4.0}));
  expect_close(two.at("ci95").as_array()[0].as_double(), -16.55930710426204);
  expect_close(two.at("ci95").as_array()[1].as_double(), 21.55930710426204);
}

TEST(StudentT, QuantileMatchesScipy) {
  struct Row {
    double df, q90, q975, q995;
  };
  // scipy.stats.t.ppf(p, df) for p = 0.9, 0.975, 0.995.
  const Row rows[] = {
      {1, 3.0776835371752544, 12.706204736174694, 63.656741162871526},
      {2, 1.8856180831641272, 4.302652729749462, 9.924843200918287},
      {3, 1.637744353696209, 3.1824463052837078, 5.840909309733355},
      {4, 1.533206274058944, 2.7764451051977934, 4.604094871349992},
      {9, 1.3830287383966329, 2.262157162798205, 3.249835541592126},
      {29, 1.311433647301551, 2.045229642132703, 2.756385903670605},
      {100, 1.290074761346516, 1.9839715185235518, 2.6258905214380173},
      {999, 1.2823995700373971, 1.9623414611334493, 2.5807596372676365},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE("df " + std::to_string(r.df));
    EXPECT_EQ(student_t_quantile(0.5, r.df), 0.0);
    const double p[] = {0.9, 0.975, 0.995}, q[] = {r.q90, r.q975, r.q995};
    for (int i = 0; i < 3; ++i) {
      SCOPED_TRACE("p " + std::to_string(p[i]));
      expect_close(student_t_quantile(p[i], r.df), q[i]);
      // 1 − p is exact for these p, and the distribution is symmetric.
      expect_close(student_t_quantile(1 - p[i], r.df), -q[i]);
      expect_close(student_t_cdf(q[i], r.df), p[i]);
    }
  }
}

TEST(StudentT, ClosedFormsAndLimits) {
  const double pi = std::acos(-1.0);
  // df = 1 is the Cauchy distribution: t = tan(π(p − 1/2)).
  for (double p : {0.6, 0.75, 0.99, 0.999, 0.01}) expect_close(student_t_quantile(p, 1), std::tan(pi * (p - 0.5)));
  // df = 2: t = (2p − 1)/√(2p(1 − p)).
  for (double p : {0.51, 0.8, 0.999}) {
    expect_close(student_t_quantile(p, 2), (2 * p - 1) / std::sqrt(2 * p * (1 - p)));
  }
  // Near the centre t ≈ (p − 1/2)/f(0), f(0) = 3/8 at df = 4 (the next term is ~t³); an
  // implementation that solves F(t) = p there loses most digits to cancellation.
  const double d = std::ldexp(1.0, -33);
  expect_close(student_t_quantile(0.5 + d, 4), d / 0.375, 1e-12);
  expect_close(student_t_cdf(2.0, 5), 0.9490302605850708);
  expect_close(student_t_cdf(-1.5, 29), 0.07221184802019287);
  constexpr double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(student_t_quantile(0.0, 3), -inf);
  EXPECT_EQ(student_t_quantile(1.0, 3), inf);
  EXPECT_TRUE(std::isnan(student_t_quantile(1.5, 3)));
  EXPECT_TRUE(std::isnan(student_t_quantile(0.9, 0)));
  EXPECT_TRUE(std::isnan(student_t_quantile(std::nan(""), 3)));
}

// Every scorer metric of the catalog (config/MetricCatalog) is produced by the scorer for
// its task, and the scorer produces no metric the catalog does not name.
TEST(MetricCatalog, EveryScorerMetricIsProduced) {
  const auto cls = to_json(classification_scores({3, 1, 0, 2}, 2));
  const auto reg = to_json(regression_scores({1.0, 2.0, 3.0}, {1.5, 2.0, 2.0}));
  for (const auto& m : metric_catalog()) {
    if (!m.from_scorer) continue;
    const auto& produced = m.task == MetricTask::Classification ? cls : reg;
    EXPECT_TRUE(produced.contains(m.name)) << m.name << " is in the catalog but the scorer does not produce it";
  }
  for (const auto* produced : {&cls, &reg}) {
    for (const auto& kv : *produced) {
      const std::string key(kv.key());
      if (key == "count" || key == "per_class") continue;
      EXPECT_NO_THROW(metric_info(key)) << key << " is produced but missing from the metric catalog";
    }
  }
}

TEST(PredictedClasses, FirstHighestScoreWins) {
  const std::vector<double> scores{0.1,  0.7,  0.7,  // tie: the first maximum
                                   2.0,  -1.0, 0.5,  //
                                   -3.0, -2.0, -1.0};
  EXPECT_EQ(predicted_classes(scores, 3), (std::vector<std::int64_t>{1, 0, 2}));
  EXPECT_TRUE(predicted_classes({}, 3).empty());
}
