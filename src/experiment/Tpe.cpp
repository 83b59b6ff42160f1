#include "experiment/Tpe.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/Error.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr std::size_t kMaxGood = 25;
constexpr std::size_t kFlatWeights = 25;  // the newest observations that weigh 1 (Optuna's default_weights)
// TPE's candidate draws of trial t come from stream (seed, Search, kTpeStream + t): apart
// from the random search's trial t (index t), which TPE's startup reuses.
constexpr std::uint64_t kTpeStream = std::uint64_t{1} << 32;

double normal_cdf(double z) {
  return 0.5 * std::erfc(-z / std::sqrt(2.0));
}

// One draw from N(mu, sigma) truncated to [low, high], by rejection from the untruncated
// normal (Box-Muller): every centre lies in [low, high], so about half the draws or more are
// accepted.
double truncated_sample(double mu, double sigma, double low, double high, SplitMix64& g) {
  for (int tries = 0; tries < 1000; ++tries) {
    const double u1 = 1.0 - g.uniform(), u2 = g.uniform();
    const double x = mu + sigma * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
    if (x >= low && x <= high) return x;
  }
  return std::clamp(mu, low, high);
}

// log of the density at x of N(mu, sigma) truncated to [low, high].
double truncated_log_pdf(double x, double mu, double sigma, double low, double high) {
  const double z = (x - mu) / sigma;
  const double mass = normal_cdf((high - mu) / sigma) - normal_cdf((low - mu) / sigma);
  return -0.5 * z * z - std::log(sigma * std::sqrt(2.0 * kPi)) - std::log(std::max(mass, 1e-300));
}

// The mass of N(mu, sigma) truncated to [low, high] inside [a, b].
double truncated_mass(double a, double b, double mu, double sigma, double low, double high) {
  const double z = normal_cdf((high - mu) / sigma) - normal_cdf((low - mu) / sigma);
  const double part = normal_cdf((b - mu) / sigma) - normal_cdf((a - mu) / sigma);
  return z > 0 ? part / z : 0.0;
}

double log_sum_exp(const std::vector<double>& terms) {
  const double top = *std::max_element(terms.begin(), terms.end());
  if (!std::isfinite(top)) return top;
  double sum = 0;
  for (double t : terms) sum += std::exp(t - top);
  return top + std::log(sum);
}

std::size_t sample_index(const std::vector<double>& p, SplitMix64& g) {
  const double u = g.uniform();
  double acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return i;
  }
  return p.size() - 1;
}

// A numeric dimension in the scale the estimator works in, and back.
struct NumericScale {
  double low = 0, high = 1;  // bounds of the estimator
  bool log = false, integer = false;
};

bool categorical(const SearchDimension& d) {
  return d.distribution.empty();
}

NumericScale scale_of(const SearchDimension& d) {
  if (d.distribution == "log_uniform") return {std::log(d.low), std::log(d.high), true, false};
  if (d.distribution == "int_uniform") return {d.low - 0.5, d.high + 0.5, false, true};
  return {d.low, d.high, false, false};
}

double to_scale(const NumericScale& s, const json::value& v) {
  double x = 0;
  if (v.is_double()) x = v.get_double();
  if (v.is_int64()) x = static_cast<double>(v.get_int64());
  if (v.is_uint64()) x = static_cast<double>(v.get_uint64());
  x = s.log ? std::log(x) : x;
  return std::clamp(x, s.low, s.high);
}

std::size_t category_of(const SearchDimension& d, const json::value& v) {
  for (std::size_t i = 0; i < d.values.size(); ++i) {
    if (d.values[i] == v) return i;
  }
  return d.values.size();
}

// A categorical kernel (Optuna's): its observation's value gets 1, every value gets
// prior_weight / kernels (prior weight 1), normalised; an observation without a value of
// the list, like the prior kernel, is uniform.
std::vector<double> categorical_kernel(std::size_t index, std::size_t values, std::size_t kernels) {
  std::vector<double> p(values, 1.0 / static_cast<double>(kernels));
  if (index < values) p[index] += 1.0;
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& x : p) x /= total;
  return p;
}

// A mixture of product kernels over some dimensions of the space: kernel j is the product
// over those dimensions of a truncated Gaussian (numeric) or a distribution over the values
// (categorical). One kernel per observation in trial order, then the prior kernel.
// Univariate TPE fits one per dimension, multivariate one over all of them.
struct Mixture {
  std::vector<std::size_t> dims;                    // indices into the space
  std::vector<NumericScale> scales;                 // per dimension in dims
  std::vector<double> weight;                       // per kernel, summing to 1
  std::vector<std::vector<double>> mu, sigma;       // [dimension][kernel], numeric dimensions
  std::vector<std::vector<std::vector<double>>> p;  // [dimension][kernel][value], categorical
};

Mixture fit_mixture(const SearchSpace& space, const std::vector<std::size_t>& dims,
                    const std::vector<const json::object*>& trials) {
  Mixture m;
  m.dims = dims;
  const std::size_t kernels = trials.size() + 1;
  m.weight = tpe_weights(trials.size());
  m.weight.push_back(1.0);  // the prior's
  const double total = std::accumulate(m.weight.begin(), m.weight.end(), 0.0);
  for (double& w : m.weight) w /= total;
  m.scales.resize(dims.size());
  m.mu.resize(dims.size());
  m.sigma.resize(dims.size());
  m.p.resize(dims.size());
  for (std::size_t k = 0; k < dims.size(); ++k) {
    const SearchDimension& d = space.dimensions[dims[k]];
    if (categorical(d)) {
      for (const json::object* t : trials) {
        const json::value* v = t->if_contains(d.key);
        m.p[k].push_back(categorical_kernel(v ? category_of(d, *v) : d.values.size(), d.values.size(), kernels));
      }
      m.p[k].push_back(categorical_kernel(d.values.size(), d.values.size(), kernels));
      continue;
    }
    const NumericScale s = m.scales[k] = scale_of(d);
    std::vector<double> present;
    for (const json::object* t : trials) {
      if (const json::value* v = t->if_contains(d.key)) present.push_back(to_scale(s, *v));
    }
    const ParzenEstimator e = fit_parzen(present, s.low, s.high);
    std::size_t next = 0;
    for (const json::object* t : trials) {  // a trial without the key: the prior's kernel here
      const bool has = t->if_contains(d.key) != nullptr;
      m.mu[k].push_back(has ? e.mu[next] : e.mu.back());
      m.sigma[k].push_back(has ? e.sigma[next] : e.sigma.back());
      next += has ? 1 : 0;
    }
    m.mu[k].push_back(e.mu.back());
    m.sigma[k].push_back(e.sigma.back());
  }
  return m;
}

// A point of a mixture: per dimension, the value in the estimator's scale (numeric) or the
// value's index (categorical).
using Point = std::vector<double>;

Point mixture_sample(const SearchSpace& space, const Mixture& m, SplitMix64& g) {
  const std::size_t j = sample_index(m.weight, g);
  Point x(m.dims.size());
  for (std::size_t k = 0; k < x.size(); ++k) {
    const SearchDimension& d = space.dimensions[m.dims[k]];
    if (categorical(d)) {
      x[k] = static_cast<double>(sample_index(m.p[k][j], g));
      continue;
    }
    const NumericScale& s = m.scales[k];
    x[k] = truncated_sample(m.mu[k][j], m.sigma[k][j], s.low, s.high, g);
    if (s.integer) x[k] = std::clamp(std::round(x[k]), d.low, d.high);
  }
  return x;
}

// log of the density at x (integer dimensions: the mass of x's unit interval).
double mixture_log_pdf(const SearchSpace& space, const Mixture& m, const Point& x) {
  std::vector<double> terms(m.weight.size());
  for (std::size_t j = 0; j < terms.size(); ++j) {
    double t = std::log(m.weight[j]);
    for (std::size_t k = 0; k < x.size(); ++k) {
      const SearchDimension& d = space.dimensions[m.dims[k]];
      const NumericScale& s = m.scales[k];
      if (categorical(d)) {
        t += std::log(std::max(m.p[k][j][static_cast<std::size_t>(x[k])], 1e-300));
      } else if (s.integer) {
        t += std::log(
            std::max(truncated_mass(x[k] - 0.5, x[k] + 0.5, m.mu[k][j], m.sigma[k][j], s.low, s.high), 1e-300));
      } else {
        t += truncated_log_pdf(x[k], m.mu[k][j], m.sigma[k][j], s.low, s.high);
      }
    }
    terms[j] = t;
  }
  return log_sum_exp(terms);
}

// Of `candidates` draws from l over `dims`, the one with the largest log l(x) - log g(x);
// written into `out`.
void propose_over(const SearchSpace& space, const std::vector<std::size_t>& dims,
                  const std::vector<const json::object*>& good, const std::vector<const json::object*>& bad,
                  SplitMix64& g, std::size_t candidates, json::object& out) {
  const Mixture l = fit_mixture(space, dims, good);
  const Mixture b = fit_mixture(space, dims, bad);
  Point best;
  double best_score = -std::numeric_limits<double>::infinity();
  for (std::size_t c = 0; c < candidates; ++c) {
    Point x = mixture_sample(space, l, g);
    const double score = mixture_log_pdf(space, l, x) - mixture_log_pdf(space, b, x);
    if (best.empty() || score > best_score) {
      best = std::move(x);
      best_score = score;
    }
  }
  for (std::size_t k = 0; k < dims.size(); ++k) {
    const SearchDimension& d = space.dimensions[dims[k]];
    if (categorical(d)) {
      out[d.key] = d.values[static_cast<std::size_t>(best[k])];
    } else if (l.scales[k].integer) {
      out[d.key] = static_cast<std::int64_t>(best[k]);
    } else {
      out[d.key] = l.scales[k].log ? std::clamp(std::exp(best[k]), d.low, d.high) : best[k];
    }
  }
}

}  // namespace

std::vector<double> tpe_weights(std::size_t n) {
  std::vector<double> w(n, 1.0);
  if (n < kFlatWeights) return w;
  const std::size_t ramp = n - kFlatWeights;
  const double first = 1.0 / static_cast<double>(n);
  for (std::size_t i = 0; i < ramp; ++i) {
    w[i] = ramp == 1 ? first : first + (1.0 - first) * static_cast<double>(i) / static_cast<double>(ramp - 1);
  }
  return w;
}

ParzenEstimator fit_parzen(const std::vector<double>& values, double low, double high) {
  ParzenEstimator e;
  e.low = low;
  e.high = high;
  const double width = high - low;
  const std::size_t n = values.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  // Sorted values between the two bounds; each value's bandwidth is the larger gap to its
  // neighbours, except that the lowest and highest (of two or more) take the gap to their
  // one inner neighbour: the bounds do not widen them.
  std::vector<double> sorted{low};
  for (std::size_t i : order) sorted.push_back(values[i]);
  sorted.push_back(high);
  const double min_sigma = width / std::min(100.0, static_cast<double>(n) + 2.0);
  e.mu = values;
  e.sigma.assign(n, 0.0);
  for (std::size_t r = 0; r < n; ++r) {
    double sigma = std::max(sorted[r + 1] - sorted[r], sorted[r + 2] - sorted[r + 1]);
    if (n >= 2 && r == 0) sigma = sorted[2] - sorted[1];
    if (n >= 2 && r + 1 == n) sigma = sorted[n] - sorted[n - 1];
    e.sigma[order[r]] = std::clamp(sigma, min_sigma, width);
  }
  e.mu.push_back(0.5 * (low + high));
  e.sigma.push_back(width);
  e.weight = tpe_weights(n);
  e.weight.push_back(1.0);
  const double total = std::accumulate(e.weight.begin(), e.weight.end(), 0.0);
  for (double& w : e.weight) w /= total;
  return e;
}

double parzen_sample(const ParzenEstimator& e, SplitMix64& g) {
  const std::size_t i = sample_index(e.weight, g);
  return truncated_sample(e.mu[i], e.sigma[i], e.low, e.high, g);
}

double parzen_log_pdf(const ParzenEstimator& e, double x) {
  std::vector<double> terms;
  for (std::size_t i = 0; i < e.mu.size(); ++i) {
    terms.push_back(std::log(e.weight[i]) + truncated_log_pdf(x, e.mu[i], e.sigma[i], e.low, e.high));
  }
  return log_sum_exp(terms);
}

double parzen_log_mass(const ParzenEstimator& e, double a, double b) {
  a = std::max(a, e.low);
  b = std::min(b, e.high);
  double mass = 0;
  for (std::size_t i = 0; i < e.mu.size(); ++i)
    mass += e.weight[i] * truncated_mass(a, b, e.mu[i], e.sigma[i], e.low, e.high);
  return std::log(std::max(mass, 1e-300));
}

std::vector<double> fit_categorical(const std::vector<std::size_t>& indices, std::size_t k) {
  const std::size_t kernels = indices.size() + 1;
  std::vector<double> p(k, 0.0);
  for (std::size_t j = 0; j <= indices.size(); ++j) {
    const std::vector<double> row = categorical_kernel(j < indices.size() ? indices[j] : k, k, kernels);
    for (std::size_t i = 0; i < k; ++i) p[i] += row[i] / static_cast<double>(kernels);
  }
  return p;
}

std::size_t tpe_good_count(std::size_t finished, double gamma) {
  const auto n = static_cast<std::size_t>(std::ceil(gamma * static_cast<double>(finished)));
  return std::min({std::max<std::size_t>(n, 1), kMaxGood, finished});
}

json::object tpe_propose(const SearchSpace& space, const std::vector<TpeObservation>& finished,
                         const TpeSettings& settings, std::uint64_t seed, int trial) {
  if (static_cast<std::int64_t>(finished.size()) < std::max<std::int64_t>(settings.startup, 1)) {
    return random_assignments(space, seed, trial);
  }
  std::vector<std::size_t> order(finished.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return finished[a].loss < finished[b].loss; });
  std::vector<bool> is_good(finished.size(), false);
  const std::size_t n_good = tpe_good_count(finished.size(), settings.gamma);
  for (std::size_t r = 0; r < n_good; ++r) is_good[order[r]] = true;
  std::vector<const json::object*> good, bad;  // each in trial order, which the weights follow
  for (std::size_t i = 0; i < finished.size(); ++i) (is_good[i] ? good : bad).push_back(&finished[i].assignments);

  SplitMix64 g(stream_seed(seed, Stream::Search, kTpeStream + static_cast<std::uint64_t>(trial)));
  const auto n = static_cast<std::size_t>(std::max<std::int64_t>(settings.candidates, 1));
  json::object out;
  if (settings.multivariate) {
    std::vector<std::size_t> all(space.dimensions.size());
    std::iota(all.begin(), all.end(), 0);
    propose_over(space, all, good, bad, g, n, out);
  } else {
    for (std::size_t k = 0; k < space.dimensions.size(); ++k) propose_over(space, {k}, good, bad, g, n, out);
  }
  return out;
}

}  // namespace hpctrain
