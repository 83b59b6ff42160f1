#pragma once
// The tree-structured Parzen estimator of search.method=tpe, as pure functions: no MPI, no
// clock, every draw from a seeded stream, so a proposal is a function of (search.seed, the
// trial's index, the trials finished before it).
//
// The method (Bergstra et al. 2011, with the estimator of Optuna 5's TPESampler): the
// finished trials are split by score into the best n_good = min(ceil(gamma * n), 25) ("good")
// and the rest ("bad"); l(x) is a Parzen estimator of the good trials, g(x) of the bad ones,
// each a mixture with one kernel per trial (weight 1, the oldest ramped down beyond 25: see
// tpe_weights) and one prior kernel (weight 1) over the whole range; `candidates` points are
// drawn from l, and the one with the highest log l(x) - log g(x) is the proposal. Until
// `startup` trials have finished, a proposal is the random search's draw of that trial.
//
// Kernels: numeric dimensions a Gaussian truncated to [low, high] centred on the trial's
// value, its bandwidth the larger gap to the neighbouring values (see fit_parzen);
// log_uniform in logarithms; int_uniform on [low - 0.5, high + 0.5], each integer weighted by
// the mass of its unit interval; lists and ranges (categorical) the trial's value with weight
// 1 and every value with weight 1 / kernels, normalised. The prior kernel sits at the middle
// with the range's width as bandwidth (uniform over a list).
//
// Multivariate (search.tpe_multivariate=true, the default, as in Optuna 5): one estimator
// over all dimensions whose kernels are the products of a trial's per-dimension kernels, so a
// candidate is drawn from one trial's kernel as a whole and values that went well together
// are proposed together. Univariate (false): one such estimator per dimension, each
// dimension's proposal its own best of `candidates` draws.
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
  bool multivariate = true;      // search.tpe_multivariate: one joint estimator, not one per dimension
};

// One finished trial: its assignments and its score, oriented so that lower is better
// (the caller negates higher-is-better metrics). A trial without a score is not passed.
struct TpeObservation {
  boost::json::object assignments;
  double loss = 0;
  std::int64_t trial = 0;  // its index: the finished trials are passed in this order
};

// A one-dimensional Gaussian mixture truncated to [low, high] (numeric dimensions, in the
// dimension's own scale: logarithms for log_uniform).
struct ParzenEstimator {
  double low = 0, high = 1;
  std::vector<double> mu, sigma, weight;  // one per value in its order, then the prior; weights sum to 1
};

// The kernel weights of n observations in trial order before normalising (Optuna's
// default_weights): 1 each up to 25; beyond, the newest 25 weigh 1 and the older n - 25 ramp
// linearly from 1/n up towards 1.
std::vector<double> tpe_weights(std::size_t n);

// Fits the estimator to `values` (inside [low, high], in trial order) plus one prior
// component at the middle with the range's width as its bandwidth. Each value's bandwidth is
// the larger of its gaps to the neighbouring values among the sorted values and the bounds,
// except that with two values or more the lowest and the highest take the gap to their inner
// neighbour; clipped to [(high - low) / min(100, n + 2), high - low] (n values plus the
// prior plus one, Optuna's "magic clip").
ParzenEstimator fit_parzen(const std::vector<double>& values, double low, double high);
double parzen_sample(const ParzenEstimator& e, SplitMix64& g);
// log density at x, or log of the mass over [a, b] (integer dimensions).
double parzen_log_pdf(const ParzenEstimator& e, double x);
double parzen_log_mass(const ParzenEstimator& e, double a, double b);

// Categorical: the mixture's probability of each of k values given the indices observed
// (kernels as above, equal weights).
std::vector<double> fit_categorical(const std::vector<std::size_t>& indices, std::size_t k);

// The split into good and bad: the indices of `finished` sorted by loss (ties: earlier
// first), the first n_good of them good.
std::size_t tpe_good_count(std::size_t finished, double gamma);

// The assignments of trial `trial` (its index) given the trials finished so far, ordered by
// their index as Optuna orders them (which trials have finished depends on the order results
// arrived in; the kernel weights and the split's ties follow the index).
boost::json::object tpe_propose(const SearchSpace& space, const std::vector<TpeObservation>& finished,
                                const TpeSettings& settings, std::uint64_t seed, int trial);

}  // namespace hpctrain
