#include "eval/Scores.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace hpctrain {
namespace json = boost::json;
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps = std::numeric_limits<double>::epsilon();

double sum(const std::vector<double>& v) {
  return pairwise_sum(v.data(), v.size());
}

// numpy.mean: the pairwise sum divided by the count.
double mean(const std::vector<double>& v) {
  return sum(v) / static_cast<double>(v.size());
}

// scikit-learn's zero_division="warn" turns 0/0 into 0.
double divide_or_zero(double num, double den) {
  return den != 0 ? num / den : 0.0;
}

json::value finite_or_null(double v) {
  return std::isfinite(v) ? json::value(v) : json::value(nullptr);
}

json::array to_array(const std::vector<double>& v) {
  json::array a;
  a.reserve(v.size());
  for (double x : v) a.push_back(finite_or_null(x));
  return a;
}

// ---- Student's t ------------------------------------------------------------------------

// log B(a, 1/2). For large a, lgamma(a) and lgamma(a + 1/2) are large and nearly equal, so
// their difference loses about log10(a) digits; Stirling's series for the difference
// cancels the large terms analytically instead:
//   lgamma(a + 1/2) − lgamma(a) = a·log1p(1/(2a)) − 1/2 + log(a)/2 + s(a + 1/2) − s(a),
// where s(x) = Σ B_2k / (2k(2k − 1)·x^(2k−1)), truncated after k = 5 (error < 1e-17 for
// a ≥ 20).
double log_beta_half(double a) {
  const double log_sqrt_pi = 0.5 * std::log(std::acos(-1.0));
  if (a < 20) return std::lgamma(a) + log_sqrt_pi - std::lgamma(a + 0.5);
  const auto s = [](double x) {
    const double r = 1.0 / x, r2 = r * r;
    return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680 - r2 / 1188))));
  };
  const double diff = a * std::log1p(0.5 / a) - 0.5 + 0.5 * std::log(a) + (s(a + 0.5) - s(a));
  return log_sqrt_pi - diff;
}

// The continued fraction 1 + d1/(1 + d2/(1 + ...)) of the regularized incomplete beta
// function, I_x(a, b) = x^a·(1 − x)^b / (a·B(a, b)·fraction), with
//   d(2m) = m(b − m)x / ((a + 2m − 1)(a + 2m)),  d(2m + 1) = −(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)),
// evaluated by the modified Lentz method. It converges fast for x < (a + 1)/(a + b + 2).
double beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  const auto guard = [](double v) { return std::abs(v) < tiny ? std::copysign(tiny, v) : v; };
  double f = 1.0, c = 1.0, d = 0.0;
  for (int j = 1; j <= 100000; ++j) {
    const double m = static_cast<double>(j / 2);
    const double dj = (j % 2 == 1) ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                                   : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1.0 / guard(1.0 + dj * d);
    c = guard(1.0 + dj / c);
    const double delta = c * d;
    f *= delta;
    if (std::abs(delta - 1.0) <= kEps) break;
  }
  return f;
}

struct TProbabilities {
  double central;  // P(|T| < t)
  double tail;     // P(T > t)
  double log_pdf;  // log of the density at t
};

// For t ≥ 0, with w = t²/df: P(|T| > t) = I_x(df/2, 1/2) with x = 1/(1 + w), and
// P(|T| < t) = I_y(1/2, df/2) with y = w/(1 + w) = 1 − x. Whichever the continued fraction
// converges fast for is computed directly, the other as 1 minus it; the direct one is
// the smaller near the centre and in the tails, where relative accuracy matters.
// Accuracy is about 1e-14 relative up to df = 1000 and degrades slowly beyond (the fraction
// then cancels near the switch-over point): about 1e-11 at df = 1e8.
TProbabilities t_probabilities(double t, double df, double log_beta) {
  t = std::abs(t);
  const double a = 0.5 * df;
  const double log_density_at_0 = -0.5 * std::log(df) - log_beta;
  if (t == 0) return {0.0, 0.5, log_density_at_0};
  const double w = t * t / df;
  // Past 1e300, w and 1 + w overflow or round to each other: use logarithms.
  const bool huge = !(w < 1e300);
  const double log_w = huge ? 2.0 * std::log(t) - std::log(df) : std::log(w);
  const double log1p_w = huge ? log_w : std::log1p(w);
  const double log_pdf = log_density_at_0 - (a + 0.5) * log1p_w;
  // x < (a + 1)/(a + b + 2), the fraction's region of fast convergence, in terms of w.
  if (w > 1.5 / (a + 1)) {
    const double x = huge ? std::exp(-log_w) : 1.0 / (1.0 + w);
    const double log_x = huge ? -log_w : std::log(x);
    const double two_sided = std::exp(a * log_x + 0.5 * std::log1p(-x) - log_beta) / (a * beta_fraction(a, 0.5, x));
    return {1.0 - two_sided, 0.5 * two_sided, log_pdf};
  }
  // Below DBL_MIN, w has lost digits to gradual underflow; its logarithm has not.
  const bool tiny = w < std::numeric_limits<double>::min();
  const double y = tiny ? std::exp(log_w) : w / (1.0 + w);
  const double log_y = tiny ? log_w : std::log(y);
  const double central = std::exp(0.5 * log_y + a * std::log1p(-y) - log_beta) / (0.5 * beta_fraction(0.5, a, y));
  return {central, 0.5 * (1.0 - central), log_pdf};
}

}  // namespace

double pairwise_sum(const double* a, std::size_t n) {
  // Block sizes and the order of the additions are NumPy's, so that results match
  // numpy.sum bit for bit.
  if (n < 8) {
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (std::size_t j = 0; j < 8; ++j) r[j] = a[j];
    std::size_t i = 8;
    for (; i < n - n % 8; i += 8) {
      for (std::size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  std::size_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

double student_t_cdf(double t, double df) {
  if (std::isnan(t) || !(df > 0) || !std::isfinite(df)) return kNaN;
  if (std::isinf(t)) return t > 0 ? 1.0 : 0.0;
  const double tail = t_probabilities(t, df, log_beta_half(0.5 * df)).tail;
  return t < 0 ? tail : 1.0 - tail;
}

double student_t_quantile(double p, double df) {
  if (!(p >= 0 && p <= 1) || !(df > 0) || !std::isfinite(df)) return kNaN;
  if (p == 0) return -kInf;
  if (p == 1) return kInf;
  // Solve for t > 0 and mirror. Near the centre the target is P(|T| < t) = |2p − 1|, far
  // out it is P(T > t) = min(p, 1 − p): each is exact in floating point where it is used
  // (Sterbenz), and each is the probability the beta function gives with full relative
  // accuracy there, so the root keeps every digit even for p next to 0.5 or 1.
  const double c = std::abs(2 * p - 1);
  if (c == 0) return 0.0;
  const bool central = c < 0.5;
  const double target = central ? c : std::min(p, 1 - p);
  const double log_beta = log_beta_half(0.5 * df);
  const double log_density_at_0 = -0.5 * std::log(df) - log_beta;

  // Newton's method on h(u) = log(P(t)/target) in u = log t: the tail is close to a power
  // of t, so h is close to linear in u and the iteration converges from far away, where
  // Newton in t would crawl. t itself is the state so that no digits are lost to exp(log t).
  struct Step {
    double h, du;  // h and the Newton step in u
  };
  const auto evaluate = [&](double t) {
    const TProbabilities pr = t_probabilities(t, df, log_beta);
    const double prob = central ? pr.central : pr.tail;
    const double dprob_du = (central ? 2.0 : -1.0) * std::exp(pr.log_pdf) * t;
    const double h = std::log1p((prob - target) / target);
    return Step{h, -h * prob / dprob_du};
  };
  // Increasing in t once the sign is fixed, so a bracket [lo, hi] with g(lo) < 0 < g(hi)
  // backs up the Newton steps.
  const auto g = [&](const Step& s) { return central ? s.h : -s.h; };

  // Starting points bound the root from one side: the density never exceeds its value at
  // 0, so P(|T| < t) ≤ 2·f(0)·t; and (1 + t²/df)^(−(df+1)/2) < (t²/df)^(−(df+1)/2), whose
  // integral gives P(T > t) < f(0)·df^((df−1)/2)·t^(−df).
  double t = central ? c / (2 * std::exp(log_density_at_0))
                     : std::exp((log_density_at_0 + 0.5 * (df - 1) * std::log(df) - std::log(target)) / df);
  Step s = evaluate(t);
  double lo = 0, hi = kInf;
  // Doubling or halving covers the whole range of doubles in about 2000 steps.
  for (int i = 0; i < 2200 && g(s) != 0; ++i) {
    if (g(s) < 0) {
      lo = t;
      if (hi < kInf) break;
      t *= 2;
    } else {
      hi = t;
      if (lo > 0) break;
      t *= 0.5;
    }
    s = evaluate(t);
  }
  for (int i = 0; i < 200 && g(s) != 0; ++i) {
    (g(s) < 0 ? lo : hi) = t;
    double next = t * std::exp(s.du);
    if (!(next > lo && next < hi)) {
      // Geometric bisection: the bracket can span many orders of magnitude.
      next = lo > 0 && hi < kInf ? lo * std::sqrt(hi / lo) : lo > 0 ? 2 * lo : 0.5 * hi;
    }
    const bool done = std::abs(next - t) <= 2 * kEps * t;
    t = next;
    if (done) break;
    s = evaluate(t);
  }
  return p < 0.5 ? -t : t;
}

ClassificationScores classification_scores(const std::vector<std::int64_t>& confusion, std::int64_t num_classes) {
  if (num_classes < 1 ||
      confusion.size() != static_cast<std::size_t>(num_classes) * static_cast<std::size_t>(num_classes)) {
    throw std::invalid_argument("classification_scores: confusion matrix of " + std::to_string(confusion.size()) +
                                " entries for " + std::to_string(num_classes) + " classes");
  }
  const auto k = static_cast<std::size_t>(num_classes);
  ClassificationScores s;
  s.support.assign(k, 0);
  std::vector<std::int64_t> predicted(k, 0);
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < k; ++i) {
    for (std::size_t j = 0; j < k; ++j) {
      const std::int64_t v = confusion[i * k + j];
      if (v < 0) throw std::invalid_argument("classification_scores: negative count in the confusion matrix");
      s.support[i] += v;
      predicted[j] += v;
      s.count += v;
    }
    correct += confusion[i * k + i];
  }

  s.precision.assign(k, 0.0);
  s.recall.assign(k, 0.0);
  s.f1.assign(k, 0.0);
  // Per-label values in label order, restricted as scikit-learn restricts them, so that
  // the averages add them up in the same order.
  std::vector<double> precision, recall, f1, weight, weighted_precision, weighted_recall, weighted_f1, true_recall;
  for (std::size_t c = 0; c < k; ++c) {
    const auto tp = static_cast<double>(confusion[c * k + c]);
    const auto support = static_cast<double>(s.support[c]);
    const auto pred = static_cast<double>(predicted[c]);
    s.precision[c] = divide_or_zero(tp, pred);
    s.recall[c] = divide_or_zero(tp, support);
    // (1 + β²)·tp / (β²·true + predicted) with β = 1, as scikit-learn writes it.
    s.f1[c] = divide_or_zero(2.0 * tp, support + pred);
    if (support > 0) true_recall.push_back(s.recall[c]);
    if (support == 0 && pred == 0) continue;
    precision.push_back(s.precision[c]);
    recall.push_back(s.recall[c]);
    f1.push_back(s.f1[c]);
    weight.push_back(support);
    weighted_precision.push_back(s.precision[c] * support);
    weighted_recall.push_back(s.recall[c] * support);
    weighted_f1.push_back(s.f1[c] * support);
  }
  if (s.count == 0) {
    s.accuracy = s.balanced_accuracy = kNaN;
    s.precision_macro = s.recall_macro = s.f1_macro = kNaN;
    s.precision_weighted = s.recall_weighted = s.f1_weighted = kNaN;
    return s;
  }
  s.accuracy = static_cast<double>(correct) / static_cast<double>(s.count);
  s.balanced_accuracy = mean(true_recall);
  s.precision_macro = mean(precision);
  s.recall_macro = mean(recall);
  s.f1_macro = mean(f1);
  // numpy.average: Σ value·weight / Σ weight. Some label has support since count > 0.
  const double total = sum(weight);
  s.precision_weighted = sum(weighted_precision) / total;
  s.recall_weighted = sum(weighted_recall) / total;
  s.f1_weighted = sum(weighted_f1) / total;
  return s;
}

namespace {

// scipy.stats.pearsonr's arithmetic: centre, scale by the largest deviation (so that the
// norm cannot overflow), normalise, take the dot product, clip to [−1, 1].
double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = x.size();
  if (n < 2) return kNaN;
  const auto constant = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [&](double e) { return e == v.front(); });
  };
  // Tested on the values, as SciPy does, not on a computed variance that rounding can
  // leave slightly above zero.
  if (constant(x) || constant(y)) return kNaN;
  const auto unit = [n](const std::vector<double>& v) {
    const double m = mean(v);
    std::vector<double> d(n), sq(n);
    double largest = 0;
    for (std::size_t i = 0; i < n; ++i) {
      d[i] = v[i] - m;
      largest = std::max(largest, std::abs(d[i]));
    }
    for (std::size_t i = 0; i < n; ++i) sq[i] = (d[i] / largest) * (d[i] / largest);
    const double norm = largest * std::sqrt(sum(sq));
    for (double& e : d) e /= norm;
    return d;
  };
  const std::vector<double> ux = unit(x), uy = unit(y);
  std::vector<double> prod(n);
  for (std::size_t i = 0; i < n; ++i) prod[i] = ux[i] * uy[i];
  double r = sum(prod);
  if (r > 1) r = 1;
  if (r < -1) r = -1;
  // SciPy promises exactly ±1 for two points.
  return n == 2 ? std::nearbyint(r) : r;
}

}  // namespace

RegressionScores regression_scores(const std::vector<double>& targets, const std::vector<double>& predictions) {
  if (targets.size() != predictions.size()) {
    throw std::invalid_argument("regression_scores: " + std::to_string(targets.size()) + " targets but " +
                                std::to_string(predictions.size()) + " predictions");
  }
  RegressionScores s;
  const std::size_t n = targets.size();
  s.count = static_cast<std::int64_t>(n);
  if (n == 0) {
    s.mse = s.rmse = s.mae = s.r2 = s.pearson = kNaN;
    return s;
  }
  const auto count = static_cast<double>(n);
  std::vector<double> work(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double e = targets[i] - predictions[i];
    work[i] = e * e;
  }
  const double sse = sum(work);
  s.mse = sse / count;
  s.rmse = std::sqrt(s.mse);
  for (std::size_t i = 0; i < n; ++i) work[i] = std::abs(predictions[i] - targets[i]);
  s.mae = sum(work) / count;
  if (n < 2) {
    s.r2 = kNaN;
  } else {
    const double target_mean = mean(targets);
    for (std::size_t i = 0; i < n; ++i) {
      const double d = targets[i] - target_mean;
      work[i] = d * d;
    }
    const double sst = sum(work);
    // force_finite: exact predictions score 1 even for constant targets; otherwise
    // constant targets score 0 instead of −inf. The test is on the computed SS_tot, so
    // targets whose mean does not round back to their common value (three times 0.1) get
    // the formula's huge negative value, as in scikit-learn.
    s.r2 = sse == 0 ? 1.0 : sst == 0 ? 0.0 : 1.0 - sse / sst;
  }
  s.pearson = pearson(targets, predictions);
  return s;
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  const std::size_t n = values.size();
  s.n = static_cast<std::int64_t>(n);
  s.mean = s.std = s.ci95_low = s.ci95_high = kNaN;
  if (n == 0) return s;
  s.mean = mean(values);
  if (n < 2) return s;
  std::vector<double> sq(n);
  for (std::size_t i = 0; i < n; ++i) sq[i] = (values[i] - s.mean) * (values[i] - s.mean);
  s.std = std::sqrt(sum(sq) / static_cast<double>(n - 1));
  // scipy.stats.t.interval(0.95, n − 1, loc=mean, scale=std/√n) computes quantile·scale.
  const double half =
      student_t_quantile(0.975, static_cast<double>(n - 1)) * (s.std / std::sqrt(static_cast<double>(n)));
  s.ci95_low = s.mean - half;
  s.ci95_high = s.mean + half;
  return s;
}

std::vector<std::int64_t> predicted_classes(const std::vector<double>& scores, std::int64_t classes) {
  const auto k = static_cast<std::size_t>(classes);
  std::vector<std::int64_t> out(k == 0 ? 0 : scores.size() / k);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double* row = scores.data() + i * k;
    std::size_t best = 0;
    for (std::size_t c = 1; c < k; ++c) {
      if (row[c] > row[best]) best = c;
    }
    out[i] = static_cast<std::int64_t>(best);
  }
  return out;
}

json::object to_json(const ClassificationScores& s) {
  json::array support;
  support.reserve(s.support.size());
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
                                                 {"support", std::move(support)}}}};
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
