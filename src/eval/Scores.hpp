#pragma once
// Classification and regression metrics, and summaries over folds, defined as
// scikit-learn 1.9 (and scipy.stats.pearsonr) define them with default arguments, so that
// anyone can recompute a report's figures from the saved predictions. No LibTorch here:
// the cross-validation driver and the report tools use these without a tensor library.
//
// Sums follow NumPy's pairwise summation, so results agree with scikit-learn to the last
// bit or two rather than only to rounding noise; that matters where scikit-learn tests a
// value against exactly zero (R² with constant targets).
#include <boost/json.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hpctrain {

struct ClassificationScores {
  std::int64_t count = 0;
  double accuracy = 0, balanced_accuracy = 0;
  double precision_macro = 0, recall_macro = 0, f1_macro = 0;
  double precision_weighted = 0, recall_weighted = 0, f1_weighted = 0;
  std::vector<double> precision, recall, f1;  // per class 0..K-1 (0 where undefined)
  std::vector<std::int64_t> support;          // true samples per class
};

// confusion: K*K row-major, row = true label, column = predicted label.
// A class counts as a label when it occurs among the true labels or the predictions
// (scikit-learn's default `labels`); a class absent from both is left out of every
// average. An undefined precision, recall or F1 counts as 0 (`zero_division="warn"`).
// Balanced accuracy averages recall over the classes that occur among the true labels
// only: a class that is only predicted has undefined recall there and is dropped.
// With no samples at all every average is NaN (scikit-learn refuses empty input).
// Throws std::invalid_argument on a wrong size or a negative count.
// The predicted class of each of the rows of `scores` (row-major, `classes` a row): the first
// highest score, the rule LibTorch's argmax follows, so host and tensor paths agree on ties.
std::vector<std::int64_t> predicted_classes(const std::vector<double>& scores, std::int64_t classes);

ClassificationScores classification_scores(const std::vector<std::int64_t>& confusion, std::int64_t num_classes);

struct RegressionScores {
  std::int64_t count = 0;
  double mse = 0, rmse = 0, mae = 0, r2 = 0, pearson = 0;
};

// R² = 1 − SS_res/SS_tot with scikit-learn's force_finite: 1 when SS_res is 0, else 0 when
// SS_tot is 0; NaN for fewer than two samples. Pearson's r is NaN for fewer than two
// samples or when either side is constant (all values equal). Everything is NaN for no
// samples. Throws std::invalid_argument when the lengths differ.
RegressionScores regression_scores(const std::vector<double>& targets, const std::vector<double>& predictions);

struct Summary {
  std::int64_t n = 0;
  double mean = 0, std = 0, ci95_low = 0, ci95_high = 0;
};

// Mean, sample standard deviation (ddof = 1) and the 95% confidence interval of the mean,
// mean ± t(0.975, n − 1)·std/√n. Mean is NaN for no values; std and interval are NaN for
// fewer than two.
Summary summarize(const std::vector<double>& values);

// Inverse of Student's t distribution function with `df` (finite, > 0) degrees of freedom;
// ±infinity at p = 0 and 1, NaN outside [0, 1] or for an invalid df.
double student_t_quantile(double p, double df);
// Student's t distribution function.
double student_t_cdf(double t, double df);

// NumPy's pairwise summation (what numpy.sum does on a contiguous float64 array).
double pairwise_sum(const double* values, std::size_t n);

// Non-finite values are written as null.
boost::json::object to_json(const ClassificationScores& scores);
boost::json::object to_json(const RegressionScores& scores);
boost::json::object to_json(const Summary& summary);

}  // namespace hpctrain
