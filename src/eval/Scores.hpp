#pragma once
// Classification and regression metrics, and summaries over folds, defined as
// scikit-learn defines them with default arguments (so anyone can recompute them from
// saved predictions), without LibTorch.
#include <boost/json.hpp>

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

// confusion: K*K row-major, row = true label, column = predicted label. Averages run over
// the labels present in the true labels or the predictions (scikit-learn's default
// `labels`); an undefined precision, recall or F1 counts as 0 (its `zero_division`);
// balanced accuracy is the mean recall over the classes present in the true labels.
ClassificationScores classification_scores(const std::vector<std::int64_t>& confusion, std::int64_t num_classes);

struct RegressionScores {
  std::int64_t count = 0;
  double mse = 0, rmse = 0, mae = 0, r2 = 0, pearson = 0;
};

// R² is 1 − SS_res/SS_tot; for constant targets 1 when every prediction is exact, else 0.
// Pearson's r is NaN when either side is constant.
RegressionScores regression_scores(const std::vector<double>& targets, const std::vector<double>& predictions);

struct Summary {
  std::int64_t n = 0;
  double mean = 0, std = 0, ci95_low = 0, ci95_high = 0;
};

// Mean, sample standard deviation (n − 1) and the 95% confidence interval of the mean,
// mean ± t(0.975, n − 1)·std/√n; std and interval are NaN for fewer than two values.
Summary summarize(const std::vector<double>& values);

// Inverse of Student's t distribution function with `df` degrees of freedom.
double student_t_quantile(double p, double df);
// Student's t distribution function.
double student_t_cdf(double t, double df);

// Non-finite values are written as null.
boost::json::object to_json(const ClassificationScores& scores);
boost::json::object to_json(const RegressionScores& scores);
boost::json::object to_json(const Summary& summary);

}  // namespace hpctrain
