#include "eval/Scores.hpp"

#include <cmath>
#include <limits>

#include "util/Error.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(double num, double den) {
  return den > 0 ? num / den : 0.0;
}

json::value finite_or_null(double v) {
  return std::isfinite(v) ? json::value(v) : json::value(nullptr);
}

json::array to_array(const std::vector<double>& v) {
  json::array a;
  for (double x : v) a.push_back(finite_or_null(x));
  return a;
}

// Continued fraction of the regularized incomplete beta function (modified Lentz).
double beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300, eps = 1e-16;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0, d = 1.0 - qab * x / qap;
  if (std::abs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 1000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1.0) < eps) break;
  }
  return h;
}

// I_x(a, b).
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0.0;
  if (x >= 1) return 1.0;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  // The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_fraction(a, b, x) / a;
  return 1.0 - front * beta_fraction(b, a, 1.0 - x) / b;
}

}  // namespace

double student_t_cdf(double t, double df) {
  const double tail = 0.5 * incomplete_beta(0.5 * df, 0.5, df / (df + t * t));
  return t >= 0 ? 1.0 - tail : tail;
}

double student_t_quantile(double p, double df) {
  if (!(p > 0 && p < 1) || !(df > 0)) return kNaN;
  if (p == 0.5) return 0.0;
  // Bracket, then bisect: the distribution function is monotone, and 200 halvings reach
  // the resolution of a double.
  double lo = -1.0, hi = 1.0;
  while (student_t_cdf(lo, df) > p) lo *= 2.0;
  while (student_t_cdf(hi, df) < p) hi *= 2.0;
  for (int i = 0; i < 200 && hi - lo > 1e-15 * std::max(1.0, std::abs(hi)); ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_cdf(mid, df) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

ClassificationScores classification_scores(const std::vector<std::int64_t>& confusion, std::int64_t k) {
  if (k < 1 || static_cast<std::int64_t>(confusion.size()) != k * k) {
    throw RuntimeFailure("classification_scores: confusion matrix of " + std::to_string(confusion.size()) +
                         " entries for " + std::to_string(k) + " classes");
  }
  ClassificationScores s;
  std::vector<double> predicted(static_cast<std::size_t>(k), 0.0);
  s.support.assign(static_cast<std::size_t>(k), 0);
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < k; ++i) {
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t v = confusion[static_cast<std::size_t>(i * k + j)];
      s.support[static_cast<std::size_t>(i)] += v;
      predicted[static_cast<std::size_t>(j)] += static_cast<double>(v);
      s.count += v;
    }
    correct += confusion[static_cast<std::size_t>(i * k + i)];
  }
  s.accuracy = ratio(static_cast<double>(correct), static_cast<double>(s.count));
  double present = 0, with_support = 0, recall_of_present = 0, total_support = 0;
  for (std::int64_t c = 0; c < k; ++c) {
    const auto i = static_cast<std::size_t>(c);
    const double tp = static_cast<double>(confusion[static_cast<std::size_t>(c * k + c)]);
    const double support = static_cast<double>(s.support[i]);
    s.precision.push_back(ratio(tp, predicted[i]));
    s.recall.push_back(ratio(tp, support));
    s.f1.push_back(ratio(2.0 * tp, predicted[i] + support));
    if (support > 0) {
      with_support += 1;
      recall_of_present += s.recall.back();
    }
    if (support > 0 || predicted[i] > 0) {
      present += 1;
      s.precision_macro += s.precision.back();
      s.recall_macro += s.recall.back();
      s.f1_macro += s.f1.back();
      s.precision_weighted += support * s.precision.back();
      s.recall_weighted += support * s.recall.back();
      s.f1_weighted += support * s.f1.back();
      total_support += support;
    }
  }
  s.balanced_accuracy = ratio(recall_of_present, with_support);
  s.precision_macro = ratio(s.precision_macro, present);
  s.recall_macro = ratio(s.recall_macro, present);
  s.f1_macro = ratio(s.f1_macro, present);
  s.precision_weighted = ratio(s.precision_weighted, total_support);
  s.recall_weighted = ratio(s.recall_weighted, total_support);
  s.f1_weighted = ratio(s.f1_weighted, total_support);
  return s;
}

RegressionScores regression_scores(const std::vector<double>& y, const std::vector<double>& p) {
  if (y.size() != p.size()) {
    throw RuntimeFailure("regression_scores: " + std::to_string(y.size()) + " targets but " + std::to_string(p.size()) +
                         " predictions");
  }
  RegressionScores s;
  s.count = static_cast<std::int64_t>(y.size());
  if (y.empty()) {
    s.mse = s.rmse = s.mae = s.r2 = s.pearson = kNaN;
    return s;
  }
  const double n = static_cast<double>(y.size());
  double ym = 0, pm = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    ym += y[i];
    pm += p[i];
  }
  ym /= n;
  pm /= n;
  double se = 0, ae = 0, ss_tot = 0, sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double e = y[i] - p[i];
    se += e * e;
    ae += std::abs(e);
    ss_tot += (y[i] - ym) * (y[i] - ym);
    sxy += (y[i] - ym) * (p[i] - pm);
    sxx += (y[i] - ym) * (y[i] - ym);
    syy += (p[i] - pm) * (p[i] - pm);
  }
  s.mse = se / n;
  s.rmse = std::sqrt(s.mse);
  s.mae = ae / n;
  s.r2 = ss_tot > 0 ? 1.0 - se / ss_tot : (se == 0 ? 1.0 : 0.0);
  if (sxx > 0 && syy > 0) {
    s.pearson = std::max(-1.0, std::min(1.0, sxy / (std::sqrt(sxx) * std::sqrt(syy))));
  } else {
    s.pearson = kNaN;
  }
  return s;
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  s.n = static_cast<std::int64_t>(values.size());
  if (values.empty()) {
    s.mean = s.std = s.ci95_low = s.ci95_high = kNaN;
    return s;
  }
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(s.n);
  if (s.n < 2) {
    s.std = s.ci95_low = s.ci95_high = kNaN;
    return s;
  }
  double sq = 0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(sq / static_cast<double>(s.n - 1));
  const double half =
      student_t_quantile(0.975, static_cast<double>(s.n - 1)) * s.std / std::sqrt(static_cast<double>(s.n));
  s.ci95_low = s.mean - half;
  s.ci95_high = s.mean + half;
  return s;
}

json::object to_json(const ClassificationScores& s) {
  json::array support;
  for (auto v : s.support) support.push_back(v);
  return json::object{{"count", s.count},
                      {"accuracy", finite_or_null(s.accuracy)},
                      {"balanced_accuracy", finite_or_null(s.balanced_accuracy)},
                      {"precision_macro", finite_or_null(s.precision_macro)},
                      {"recall_macro", finite_or_null(s.recall_macro)},
                      {"f1_macro", finite_or_null(s.f1_macro)},
                      {"precision_weighted", finite_or_null(s.precision_weighted)},
                      {"recall_weighted", finite_or_null(s.recall_weighted)},
                      {"f1_weighted", finite_or_null(s.f1_weighted)},
                      {"per_class", json::object{{"precision", to_array(s.precision)},
                                                 {"recall", to_array(s.recall)},
                                                 {"f1", to_array(s.f1)},
                                                 {"support", support}}}};
}

json::object to_json(const RegressionScores& s) {
  return json::object{{"count", s.count},
                      {"mse", finite_or_null(s.mse)},
                      {"rmse", finite_or_null(s.rmse)},
                      {"mae", finite_or_null(s.mae)},
                      {"r2", finite_or_null(s.r2)},
                      {"pearson", finite_or_null(s.pearson)}};
}

json::object to_json(const Summary& s) {
  return json::object{{"n", s.n},
                      {"mean", finite_or_null(s.mean)},
                      {"std", finite_or_null(s.std)},
                      {"ci95", json::array{finite_or_null(s.ci95_low), finite_or_null(s.ci95_high)}}};
}

}  // namespace hpctrain
