// The tree-structured Parzen estimator as pure functions: its estimators are Optuna's
// (bandwidths, weights, densities) and densities on their range, the good/bad split, and proposals that are
// deterministic for a seed and an arrival order, find the optimum of a 1-D quadratic better than random draws with the
// same budget, stay inside every kind of dimension and learn a categorical choice (univariate and multivariate), and
// the multivariate estimator follows a 2-D valley along which the two parameters interact better than random draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "experiment/SearchSpace.hpp"
#include "experiment/Tpe.hpp"

using namespace hpctrain;
namespace json = boost::json;

namespace {

double num(const json::value& v) {
  return v.is_double() ? v.get_double() : static_cast<double>(v.as_int64());
}

// A sequential search of `budget` trials minimizing `loss`: TPE when tpe, else random draws.
std::vector<TpeObservation> search(const SearchSpace& space, const std::function<double(const json::object&)>& loss,
                                   int budget, std::uint64_t seed, bool tpe, TpeSettings settings = {}) {
  std::vector<TpeObservation> done;
  for (int t = 0; t < budget; ++t) {
    json::object a = tpe ? tpe_propose(space, done, settings, seed, t) : random_assignments(space, seed, t);
    const double l = loss(a);
    done.push_back(TpeObservation{std::move(a), l, t});
  }
  return done;
}

double best(const std::vector<TpeObservation>& done) {
  double b = INFINITY;
  for (const auto& o : done) b = std::min(b, o.loss);
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

// The expected bandwidths, densities and probabilities are Optuna 5.0.0's for the same
// observations (its _ParzenEstimator with TPESampler's defaults), computed once and written
// here: the estimator is meant to be that one.
TEST(Tpe, ParzenEstimatorIsOptunasDensityOnItsRange) {
  const ParzenEstimator e = fit_parzen({-1.0, 0.5, 0.6, 2.0}, -3.0, 3.0);
  ASSERT_EQ(e.mu.size(), 5u);  // four values in their order, then the prior
  const std::vector<double> mu{-1.0, 0.5, 0.6, 2.0, 0.0}, sigma{1.5, 1.5, 1.4, 1.4, 6.0};
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(e.mu[i], mu[i], 1e-12) << i;
    EXPECT_NEAR(e.sigma[i], sigma[i], 1e-12) << i;  // the ends' the gap inward, not to the bound
    EXPECT_NEAR(e.weight[i], 0.2, 1e-12) << i;
  }
  EXPECT_NEAR(parzen_log_pdf(e, 0.55), -1.47389755, 1e-8);
  EXPECT_NEAR(parzen_log_pdf(e, 2.9), -2.07998138, 1e-8);
  double integral = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) integral += std::exp(parzen_log_pdf(e, -3.0 + 6.0 * (i + 0.5) / n)) * 6.0 / n;
  EXPECT_NEAR(integral, 1.0, 1e-3);
  EXPECT_NEAR(parzen_log_mass(e, -3.0, 3.0), 0.0, 1e-9);
  SplitMix64 g(7);
  for (int i = 0; i < 1000; ++i) {
    const double x = parzen_sample(e, g);
    EXPECT_TRUE(x >= -3.0 && x <= 3.0) << x;
  }
  // One value: the larger gap to a bound; the magic clip's floor is (high - low) / 3.
  EXPECT_NEAR(fit_parzen({1.0}, -3.0, 3.0).sigma[0], 4.0, 1e-12);
  EXPECT_NEAR(fit_parzen({0.0, 0.01, 0.02}, -3.0, 3.0).sigma[1], 6.0 / 5.0, 1e-12);
}

TEST(Tpe, OldObservationsWeighLessBeyondTwentyFive) {
  EXPECT_EQ(tpe_weights(24), std::vector<double>(24, 1.0));
  const std::vector<double> w = tpe_weights(30);  // Optuna's default_weights(30)
  const std::vector<double> ramp{1.0 / 30, 0.275, 0.51666666667, 0.75833333333, 1.0};
  for (std::size_t i = 0; i < 30; ++i) EXPECT_NEAR(w[i], i < 5 ? ramp[i] : 1.0, 1e-9) << i;
}

TEST(Tpe, CategoricalHasAPriorOverEveryValue) {
  const std::vector<double> p = fit_categorical({1, 1, 2}, 3);
  EXPECT_NEAR(p[0], 0.19047619, 1e-8);
  EXPECT_NEAR(p[1], 0.47619048, 1e-8);
  EXPECT_NEAR(p[2], 0.33333333, 1e-8);
}

TEST(Tpe, GoodCountIsACappedQuantile) {
  EXPECT_EQ(tpe_good_count(10, 0.1), 1u);
  EXPECT_EQ(tpe_good_count(11, 0.1), 2u);
  EXPECT_EQ(tpe_good_count(1000, 0.1), 25u);
  EXPECT_EQ(tpe_good_count(5, 0.0), 1u);
  EXPECT_EQ(tpe_good_count(4, 1.0), 4u);
}

class TpeBoth : public ::testing::TestWithParam<bool> {
 protected:
  TpeSettings settings() const {
    TpeSettings s;
    s.multivariate = GetParam();
    return s;
  }
};

INSTANTIATE_TEST_SUITE_P(Estimator, TpeBoth, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "joint" : "per_dimension"; });

TEST_P(TpeBoth, StartupIsTheRandomSearchAndProposalsAreDeterministic) {
  const SearchSpace space = parse_search_space(
      R"({"optimizer.lr": {"uniform": [-10, 10]}, "model.fc_width": {"int_uniform": [1, 20]},
          "optimizer.name": ["sgd", "adam", "adamw"]})");
  TpeSettings s = settings();
  s.startup = 3;
  std::vector<TpeObservation> done;
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(tpe_propose(space, done, s, 5, t), random_assignments(space, 5, t));
    done.push_back(TpeObservation{random_assignments(space, 5, t), static_cast<double>(t), t});
  }
  const json::object a = tpe_propose(space, done, s, 5, 3);
  EXPECT_EQ(a, tpe_propose(space, done, s, 5, 3));  // the same seed, trial and arrivals
  EXPECT_NE(a, random_assignments(space, 5, 3));
  EXPECT_NE(a, tpe_propose(space, done, s, 6, 3));
  std::reverse(done.begin(), done.end());  // another arrival order of the same results
  EXPECT_EQ(tpe_propose(space, done, s, 5, 3), tpe_propose(space, done, s, 5, 3));
}

// (x - 3)^2 on [-10, 10]: over 10 seeds, 30 trials each (10 of them startup draws), TPE's
// best is closer to the optimum than random search's in median, and its proposals after the
// startup gather near x = 3.
TEST_P(TpeBoth, FindsTheRegionOfTheOptimumBetterThanRandom) {
  const SearchSpace space = parse_search_space(R"({"optimizer.lr": {"uniform": [-10, 10]}})");
  const auto loss = [](const json::object& a) { return std::pow(num(a.at("optimizer.lr")) - 3.0, 2); };
  std::vector<double> tpe_best, random_best, tpe_late, random_late;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    const auto t = search(space, loss, 30, seed, true, settings());
    const auto r = search(space, loss, 30, seed, false);
    tpe_best.push_back(best(t));
    random_best.push_back(best(r));
    for (std::size_t i = 10; i < t.size(); ++i) {
      tpe_late.push_back(std::sqrt(t[i].loss));
      random_late.push_back(std::sqrt(r[i].loss));
    }
  }
  EXPECT_LT(median(tpe_best), median(random_best));
  EXPECT_LT(median(tpe_best), 0.05);
  EXPECT_LT(median(tpe_late), 0.6 * median(random_late)) << median(tpe_late) << " " << median(random_late);
}

TEST_P(TpeBoth, EveryKindOfDimensionStaysInItsRange) {
  const SearchSpace space = parse_search_space(
      R"({"optimizer.lr": {"log_uniform": [1e-5, 1]}, "model.fc_width": {"int_uniform": [1, 20]},
          "optimizer.name": ["sgd", "adam", "adamw"], "train.batch_size": {"range": [16, 129, 16]}})");
  const auto loss = [](const json::object& a) {
    const double lr = std::log10(num(a.at("optimizer.lr"))) + 3.0;
    const double width = num(a.at("model.fc_width")) - 7.0;
    const double name = a.at("optimizer.name") == json::value("adam") ? 0.0 : 1.0;
    return lr * lr + std::abs(width) + 4 * name;
  };
  TpeSettings s = settings();
  s.startup = 8;
  const auto done = search(space, loss, 60, 3, true, s);
  int adam = 0, near_width = 0;
  for (std::size_t i = 0; i < done.size(); ++i) {
    const auto& a = done[i].assignments;
    const double lr = num(a.at("optimizer.lr"));
    EXPECT_TRUE(lr >= 1e-5 && lr <= 1) << lr;
    ASSERT_TRUE(a.at("model.fc_width").is_int64());
    const auto w = a.at("model.fc_width").as_int64();
    EXPECT_TRUE(w >= 1 && w <= 20) << w;
    const auto b = a.at("train.batch_size").as_int64();
    EXPECT_TRUE(b % 16 == 0 && b >= 16 && b <= 128) << b;
    if (i >= 30) {
      adam += a.at("optimizer.name") == json::value("adam") ? 1 : 0;
      near_width += std::abs(w - 7) <= 3 ? 1 : 0;
    }
  }
  EXPECT_GE(adam, 20) << "of 30 late proposals";        // a uniform choice: about 10
  EXPECT_GE(near_width, 15) << "of 30 late proposals";  // a uniform draw: about 10
  EXPECT_LT(best(done), 1.0);
}

// A narrow valley along x = y on [-5, 5]^2 (the optimum at (1, 1)): a good x is good only
// with the matching y, which one estimator per dimension cannot express. Over 10 seeds, 40
// trials each (10 startup draws), the joint estimator's best is lower than random search's in
// median, and its late proposals lie nearer the valley's floor.
TEST(Tpe, MultivariateFollowsAnInteractionBetterThanRandom) {
  const SearchSpace space =
      parse_search_space(R"({"model.dropout": {"uniform": [-5, 5]}, "optimizer.lr": {"uniform": [-5, 5]}})");
  const auto loss = [](const json::object& a) {
    const double x = num(a.at("model.dropout")), y = num(a.at("optimizer.lr"));
    return 20 * (x - y) * (x - y) + (x + y - 2) * (x + y - 2);
  };
  const auto gap = [](const json::object& a) {
    return std::abs(num(a.at("model.dropout")) - num(a.at("optimizer.lr")));
  };
  TpeSettings s;
  s.multivariate = true;
  std::vector<double> joint_best, random_best, joint_gap, random_gap;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    const auto t = search(space, loss, 40, seed, true, s);
    const auto r = search(space, loss, 40, seed, false);
    joint_best.push_back(best(t));
    random_best.push_back(best(r));
    for (std::size_t i = 10; i < t.size(); ++i) {
      joint_gap.push_back(gap(t[i].assignments));
      random_gap.push_back(gap(r[i].assignments));
    }
  }
  EXPECT_LT(median(joint_best), 0.5 * median(random_best)) << median(joint_best) << " " << median(random_best);
  EXPECT_LT(median(joint_gap), 0.5 * median(random_gap)) << median(joint_gap) << " " << median(random_gap);
}
