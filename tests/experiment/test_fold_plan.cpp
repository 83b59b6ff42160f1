#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "experiment/FoldPlan.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

namespace {

// Held-out sets of one repeat are disjoint and cover [0, n); each list is sorted and train
// is exactly the complement of held_out.
void expect_partition(const FoldPlan& plan, std::int64_t n) {
  ASSERT_EQ(plan.folds.size(), static_cast<std::size_t>(plan.k * plan.repeats));
  for (int r = 0; r < plan.repeats; ++r) {
    std::vector<int> seen(static_cast<std::size_t>(n), 0);
    for (int f = 0; f < plan.k; ++f) {
      const Fold& fold = plan.folds[static_cast<std::size_t>(r * plan.k + f)];
      EXPECT_EQ(fold.repeat, r);
      EXPECT_EQ(fold.index, f);
      EXPECT_TRUE(std::is_sorted(fold.held_out.begin(), fold.held_out.end()));
      EXPECT_TRUE(std::is_sorted(fold.train.begin(), fold.train.end()));
      EXPECT_FALSE(fold.held_out.empty());
      std::vector<std::int64_t> both = fold.held_out;
      both.insert(both.end(), fold.train.begin(), fold.train.end());
      std::sort(both.begin(), both.end());
      ASSERT_EQ(both.size(), static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(both[i], i);  // complement, no overlap
      for (auto i : fold.held_out) ++seen[static_cast<std::size_t>(i)];
    }
    for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i], 1) << "sample " << i << " repeat " << r;
  }
}

// counts[fold][class], classes in ascending label value (as the sklearn literals below).
std::vector<std::vector<int>> count_matrix(const FoldPlan& plan, int repeat, const std::vector<std::int32_t>& labels) {
  std::set<std::int32_t> values(labels.begin(), labels.end());
  std::map<std::int32_t, int> column;
  for (auto v : values) column.emplace(v, static_cast<int>(column.size()));
  std::vector<std::vector<int>> m(static_cast<std::size_t>(plan.k), std::vector<int>(values.size(), 0));
  for (int f = 0; f < plan.k; ++f) {
    for (auto i : plan.folds[static_cast<std::size_t>(repeat * plan.k + f)].held_out) ++m[f][column[labels[i]]];
  }
  return m;
}

std::vector<std::vector<std::int64_t>> held_out_sets(const FoldPlan& plan) {
  std::vector<std::vector<std::int64_t>> out;
  for (const auto& f : plan.folds) out.push_back(f.held_out);
  return out;
}

std::vector<std::int32_t> formula_labels() {
  std::vector<std::int32_t> y;
  for (int i = 0; i < 200; ++i) y.push_back((i * 37 + i * i) % 11 % 6);
  return y;
}

void expect_config_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected ConfigError containing '" << needle << "'";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(FoldPlan, PlainFoldsPartitionWithSklearnSizes) {
  for (std::int64_t n : {2, 7, 10, 101, 1000}) {
    for (int k : {2, 3, 5, 7}) {
      if (k > n) continue;
      const auto plan = make_fold_plan(n, {}, k, 2, false, 11);
      EXPECT_EQ(plan.k, k);
      EXPECT_EQ(plan.repeats, 2);
      EXPECT_FALSE(plan.stratified);
      EXPECT_EQ(plan.seed, 11u);
      expect_partition(plan, n);
      for (const auto& fold : plan.folds) {
        // KFold: the first n % k folds take one sample more.
        const std::int64_t expected = n / k + (fold.index < n % k ? 1 : 0);
        EXPECT_EQ(static_cast<std::int64_t>(fold.held_out.size()), expected) << "n=" << n << " k=" << k;
      }
    }
  }
}

TEST(FoldPlan, PlainFoldsAreShuffledNotContiguous) {
  const auto plan = make_fold_plan(100, {}, 4, 1, false, 5);
  const auto& h = plan.folds[0].held_out;
  EXPECT_NE(h.back() - h.front() + 1, static_cast<std::int64_t>(h.size()));
}

TEST(FoldPlan, PlainIgnoresLabels) {
  const std::vector<std::int32_t> labels = {0, 1, 0, 1, 0, 1, 0, 1, 0};
  EXPECT_EQ(held_out_sets(make_fold_plan(9, labels, 3, 1, false, 4)),
            held_out_sets(make_fold_plan(9, {}, 3, 1, false, 4)));
}

TEST(FoldPlan, DeterministicFromSeedAndRepeat) {
  const auto labels = formula_labels();
  for (bool stratified : {false, true}) {
    const auto a = make_fold_plan(200, labels, 5, 3, stratified, 42);
    const auto b = make_fold_plan(200, labels, 5, 3, stratified, 42);
    EXPECT_EQ(held_out_sets(a), held_out_sets(b));
    for (std::size_t i = 0; i < a.folds.size(); ++i) EXPECT_EQ(a.folds[i].train, b.folds[i].train);

    const auto other_seed = make_fold_plan(200, labels, 5, 3, stratified, 43);
    EXPECT_NE(held_out_sets(a), held_out_sets(other_seed));

    // Repeats differ from each other, and repeat r does not depend on how many repeats exist.
    EXPECT_NE(a.folds[0].held_out, a.folds[5].held_out);
    EXPECT_NE(a.folds[5].held_out, a.folds[10].held_out);
    const auto fewer = make_fold_plan(200, labels, 5, 2, stratified, 42);
    for (std::size_t i = 0; i < fewer.folds.size(); ++i) EXPECT_EQ(fewer.folds[i].held_out, a.folds[i].held_out);
  }
}

TEST(FoldPlan, StratifiedBalancesClassesAndFoldSizes) {
  const auto labels = formula_labels();
  for (int k : {2, 3, 5, 7, 10}) {
    const auto plan = make_fold_plan(200, labels, k, 3, true, 9);
    EXPECT_TRUE(plan.stratified);
    expect_partition(plan, 200);
    for (int r = 0; r < plan.repeats; ++r) {
      const auto m = count_matrix(plan, r, labels);
      for (std::size_t c = 0; c < m[0].size(); ++c) {
        int lo = m[0][c], hi = m[0][c];
        for (const auto& row : m) lo = std::min(lo, row[c]), hi = std::max(hi, row[c]);
        EXPECT_LE(hi - lo, 1) << "k=" << k << " class column " << c;
      }
      std::size_t lo = plan.folds[r * k].held_out.size(), hi = lo;
      for (int f = 0; f < k; ++f) {
        lo = std::min(lo, plan.folds[r * k + f].held_out.size());
        hi = std::max(hi, plan.folds[r * k + f].held_out.size());
      }
      EXPECT_LE(hi - lo, 1u) << "k=" << k;
    }
  }
}

// Expected matrices computed with scikit-learn 1.9.1:
//   StratifiedKFold(k, shuffle=True, random_state=rs).split(X, y), counting each label value
//   (ascending) in each test fold; identical for every random_state tried.
struct SklearnCase {
  std::vector<std::int32_t> labels;
  int k;
  std::vector<std::vector<int>> counts;  // [fold][label value ascending]
};

TEST(FoldPlan, StratifiedCountsMatchSklearn) {
  const std::vector<SklearnCase> cases = {
      {{1, 1, 0, 0, 0, 2, 1, 0, 2, 0}, 3, {{2, 1, 1}, {2, 1, 0}, {1, 1, 1}}},
      {{3, 1, 0, 3, 2, 1, 1, 3, 0, 2, 3, 1, 0, 2, 3, 1, 0, 2, 3, 1, 0, 3, 2},
       4,
       {{1, 2, 1, 2}, {2, 1, 1, 2}, {1, 1, 2, 2}, {1, 2, 1, 1}}},
      // Fewer members than folds for -1 and 7: allowed (sklearn only warns).
      {{5, 5, -1, 5, 7, 5, 5, -1, 5, 5, 5, 5, -1, 5, 5}, 5, {{0, 3, 0}, {1, 2, 0}, {1, 2, 0}, {1, 2, 0}, {0, 2, 1}}},
      // Classes are ordered by first appearance (9 before 4), not by value.
      {{9, 9, 9, 4, 4, 4}, 2, {{1, 2}, {2, 1}}},
      {{2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
       6,
       {{1, 1, 2}, {2, 1, 1}, {1, 2, 1}, {1, 2, 1}, {1, 2, 1}, {1, 1, 1}}},
      {formula_labels(),
       7,
       {{6, 8, 5, 5, 5},
        {6, 8, 5, 5, 5},
        {5, 7, 5, 6, 6},
        {5, 7, 6, 5, 6},
        {5, 8, 5, 5, 5},
        {5, 8, 5, 5, 5},
        {5, 8, 5, 5, 5}}},
  };
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const auto& tc = cases[c];
    const auto n = static_cast<std::int64_t>(tc.labels.size());
    for (std::uint64_t seed : {0ULL, 1ULL, 12345ULL}) {
      const auto plan = make_fold_plan(n, tc.labels, tc.k, 2, true, seed);
      expect_partition(plan, n);
      for (int r = 0; r < 2; ++r) EXPECT_EQ(count_matrix(plan, r, tc.labels), tc.counts) << "case " << c;
    }
  }
}

TEST(FoldPlan, StratifiedShufflesWithinClass) {
  // Class members must not land in folds in index order (the unshuffled sklearn layout).
  std::vector<std::int32_t> labels(60, 0);
  const auto plan = make_fold_plan(60, labels, 3, 1, true, 8);
  std::vector<std::int64_t> blocked(20);
  std::iota(blocked.begin(), blocked.end(), 0);
  EXPECT_NE(plan.folds[0].held_out, blocked);
}

TEST(FoldPlan, RejectsBadArguments) {
  expect_config_error([] { make_fold_plan(10, {}, 1, 1, false, 0); }, "k >= 2");
  expect_config_error([] { make_fold_plan(10, {}, 0, 1, false, 0); }, "got k=0");
  expect_config_error([] { make_fold_plan(3, {}, 5, 1, false, 0); },
                      "k=5 cannot be greater than the number of samples n=3");
  expect_config_error([] { make_fold_plan(10, {}, 2, 0, false, 0); }, "repeats >= 1");
  expect_config_error([] { make_fold_plan(6, {0, 1, 0, 1, 0}, 2, 1, true, 0); }, "got 5 labels for n=6");
  expect_config_error([] { make_fold_plan(6, {}, 2, 1, true, 0); }, "got 0 labels for n=6");
  expect_config_error(
      [] {
        make_fold_plan(6, {0, 0, 1, 1, 2, 2}, 3, 1, true, 0);
      },
      "k=3 cannot be greater than the number of members in each class (largest class has 2");
  // One class large enough is sufficient, as in scikit-learn.
  EXPECT_NO_THROW(make_fold_plan(7, {0, 0, 1, 1, 2, 2, 2}, 3, 1, true, 0));
  // Errors are ConfigErrors, catchable as the project-wide base.
  EXPECT_THROW(make_fold_plan(1, {}, 2, 1, false, 0), Error);
}

namespace {
std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}
}  // namespace

// Forward chaining, as scikit-learn's TimeSeriesSplit(n_splits=k, gap=g) cuts the same rows:
// every held-out block lies after all of its fold's training rows, `gap` rows apart.
TEST(TimeFoldPlan, HoldsOutLaterBlocksAndTrainsOnWhatCameBefore) {
  const auto plan = make_time_fold_plan(20, 3, 0);
  EXPECT_EQ(plan.scheme, "time");
  EXPECT_EQ(plan.repeats, 1);
  EXPECT_FALSE(plan.stratified);
  ASSERT_EQ(plan.folds.size(), 3u);
  for (int f = 0; f < 3; ++f) {
    EXPECT_EQ(plan.folds[f].index, f);
    EXPECT_EQ(plan.folds[f].held_out, range(5 + 5 * f, 10 + 5 * f));
    EXPECT_EQ(plan.folds[f].train, range(0, 5 + 5 * f));
  }
  // n not a multiple of k + 1: the first block takes the remainder.
  const auto odd = make_time_fold_plan(22, 3, 0);
  EXPECT_EQ(odd.folds[0].held_out, range(7, 12));
  EXPECT_EQ(odd.folds[2].held_out, range(17, 22));
  EXPECT_EQ(odd.folds[0].train, range(0, 7));
}

TEST(TimeFoldPlan, LeavesTheGapOutOfTraining) {
  // Windows whose targets reach 2 steps past their end: the 2 rows before a held-out block
  // have targets inside it.
  const auto plan = make_time_fold_plan(20, 3, 2);
  EXPECT_EQ(plan.gap, 2);
  for (int f = 0; f < 3; ++f) {
    EXPECT_EQ(plan.folds[f].train, range(0, 3 + 5 * f));
    EXPECT_EQ(plan.folds[f].held_out.front() - plan.folds[f].train.back(), 3);
  }
}

TEST(TimeFoldPlan, RejectsTooFewRows) {
  expect_config_error([] { make_time_fold_plan(20, 1, 0); }, "k >= 2");
  expect_config_error([] { make_time_fold_plan(3, 4, 0); }, "3 rows give 4 held-out blocks of 0 rows");
  expect_config_error([] { make_time_fold_plan(10, 4, 2); },
                      "leave 0 training rows for the first fold after the gap of 2 rows");
  EXPECT_NO_THROW(make_time_fold_plan(10, 4, 1));
}
