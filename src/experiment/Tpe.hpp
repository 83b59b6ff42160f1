#pragma once
// The tree-structured Parzen estimator of search.method=tpe, as pure functions: no MPI, no
// clock, every draw from a seeded stream, so a proposal is a function of (search.seed, the
// trial's index, the trials finished before it in the order they finished).
//
// The method (Bergstra et al. 2011, as Optuna's default TPESampler runs it, univariate):
// the finished trials are split by score into the best n_good = min(ceil(gamma * n), 25)
// ("good") and the rest ("bad"); for each dimension of the space, a Parzen estimator l(x)
// is fitted to the good trials' values and g(x) to the bad ones', each a mixture with one
// prior component over the whole range; `candidates` points are drawn from l, and the one
// with the highest sum over dimensions of log l(x) - log g(x) is the proposal. Until
// `startup` trials have finished, a proposal is the random search's draw of that trial.
//
// Dimensions: uniform (a truncated Gaussian mixture on [low, high]), log_uniform (the same
// on [ln low, ln high]), int_uniform (the mixture on [low - 0.5, high + 0.5], rounded, each
// integer weighted by the mixture's mass over its unit interval) and lists or ranges
// (categorical: each value's count in the set plus a prior of 1/K per value).
//
// Multivariate (search.tpe_multivariate=true; Optuna 5's TPESampler default but not ours: on
// the search of docs/benchmarks.md it found no better best score than the univariate one):
// l(x) and g(x) are each one joint Parzen estimator over all dimensions, a kernel per good (bad)
// trial that is the product over dimensions of a truncated Gaussian centred on the trial's
// value (bandwidth 0.2 * width * n^(-1/(D+4)), Scott's rule for D dimensions) or, for a
// categorical dimension, the trial's value with probability 0.8 and a uniform draw over the
// values otherwise; plus one prior kernel (the middle of each range with its width as
// bandwidth, uniform over each categorical). A candidate is drawn from one kernel as a whole,
// so values that went well together are proposed together; the candidate with the highest
// log l(x) - log g(x) is the proposal.
#include <boost/json.hpp>

#include <cstdint>
#include <vector>

#include "experiment/SearchSpace.hpp"
#include "util/Random.hpp"

namespace hpctrain {

struct TpeSettings {
  std::int64_t startup = 10;     // search.tpe_startup: random proposals until this many trials finished
  double gamma = 0.1;            // search.tpe_gamma: the good fraction (at most 25 trials)
  std::int64_t candidates = 24;  // search.tpe_candidates: draws from l(x) compared by l/g
  bool multivariate = false;     // search.tpe_multivariate: one joint estimator, not one per dimension
};

// One finished trial: its assignments and its score, oriented so that lower is better
// (the caller negates higher-is-better metrics). A trial without a score is not passed.
struct TpeObservation {
  boost::json::object assignments;
  double loss = 0;
};

// A one-dimensional Gaussian mixture truncated to [low, high] (numeric dimensions, in the
// dimension's own scale: logarithms for log_uniform).
struct ParzenEstimator {
  double low = 0, high = 1;
  std::vector<double> mu, sigma, weight;  // weights sum to 1
};

// Fits the estimator to `values` (inside [low, high]) plus one prior component at the
// middle with the range's width as its bandwidth. Each value's bandwidth is the larger gap
// to its neighbours (the bounds at the ends), clipped to [(high - low) / min(100, n + 1),
// high - low].
ParzenEstimator fit_parzen(const std::vector<double>& values, double low, double high);
double parzen_sample(const ParzenEstimator& e, SplitMix64& g);
// log density at x, or log of the mass over [a, b] (integer dimensions).
double parzen_log_pdf(const ParzenEstimator& e, double x);
double parzen_log_mass(const ParzenEstimator& e, double a, double b);

// Categorical: the probability of each of k values from the indices observed.
std::vector<double> fit_categorical(const std::vector<std::size_t>& indices, std::size_t k);

// The split into good and bad: the indices of `finished` sorted by loss (ties: earlier
// first), the first n_good of them good.
std::size_t tpe_good_count(std::size_t finished, double gamma);

// The assignments of trial `trial` (its index) given the trials finished so far, in the
// order they finished.
boost::json::object tpe_propose(const SearchSpace& space, const std::vector<TpeObservation>& finished,
                                const TpeSettings& settings, std::uint64_t seed, int trial);

}  // namespace hpctrain
