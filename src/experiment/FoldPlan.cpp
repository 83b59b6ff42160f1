#include "experiment/FoldPlan.hpp"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include "data/Sampling.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// Classes encoded 0, 1, ... in order of first appearance: scikit-learn encodes them this
// way, and the per-fold allocation depends on the class order, so sorting by label value
// would give different counts.
struct EncodedClasses {
  std::vector<std::vector<std::int64_t>> members;  // per class, ascending sample indices
};

EncodedClasses encode_by_first_appearance(const std::vector<std::int32_t>& labels) {
  EncodedClasses out;
  std::unordered_map<std::int32_t, std::size_t> code;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    auto [it, inserted] = code.emplace(labels[i], out.members.size());
    if (inserted) out.members.emplace_back();
    out.members[it->second].push_back(static_cast<std::int64_t>(i));
  }
  return out;
}

void shuffle(std::vector<int>& v, SplitMix64& g) {
  // Same Fisher-Yates as global_permutation, so the generator is the only source of order.
  for (std::size_t i = v.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(g.below(static_cast<std::uint64_t>(i)));
    std::swap(v[i - 1], v[j]);
  }
}

// Test fold of every sample for one stratified repeat (scikit-learn's _make_test_folds).
std::vector<int> stratified_test_folds(std::int64_t n, const EncodedClasses& classes, int k, SplitMix64& g) {
  std::vector<int> test_fold(static_cast<std::size_t>(n), -1);
  // Round robin over the labels sorted by code: position p of that sorted sequence goes to
  // fold p % k. This keeps each class's per-fold counts within one of each other and the
  // fold sizes within one, exactly as scikit-learn allocates them.
  std::int64_t start = 0;
  for (const auto& members : classes.members) {
    const auto count = static_cast<std::int64_t>(members.size());
    std::vector<std::int64_t> allocation(static_cast<std::size_t>(k), 0);
    for (std::int64_t p = start; p < start + count; ++p) ++allocation[static_cast<std::size_t>(p % k)];
    start += count;

    std::vector<int> folds_for_class;
    folds_for_class.reserve(members.size());
    for (int f = 0; f < k; ++f) folds_for_class.insert(folds_for_class.end(), allocation[f], f);
    shuffle(folds_for_class, g);
    for (std::size_t i = 0; i < members.size(); ++i) test_fold[members[i]] = folds_for_class[i];
  }
  return test_fold;
}

// Test fold of every sample for one plain repeat (scikit-learn's KFold with shuffle).
std::vector<int> plain_test_folds(std::int64_t n, int k, std::uint64_t seed, int repeat) {
  const auto order = global_permutation(n, seed, Stream::Folds, static_cast<std::uint64_t>(repeat));
  std::vector<int> test_fold(static_cast<std::size_t>(n), -1);
  const std::int64_t base = n / k, extra = n % k;
  std::int64_t pos = 0;
  for (int f = 0; f < k; ++f) {
    const std::int64_t size = base + (f < extra ? 1 : 0);
    for (std::int64_t i = 0; i < size; ++i) test_fold[order[pos++]] = f;
  }
  return test_fold;
}

void validate(std::int64_t n, const std::vector<std::int32_t>& labels, int k, int repeats, bool stratified) {
  if (k < 2) {
    throw ConfigError("cv.folds: k-fold cross-validation needs k >= 2 folds (at least one train/test split), got k=" +
                      std::to_string(k));
  }
  if (k > n) {
    throw ConfigError("cv.folds: k=" + std::to_string(k) +
                      " cannot be greater than the number of samples n=" + std::to_string(n));
  }
  if (repeats < 1) {
    throw ConfigError("cv.repeats: k-fold cross-validation needs repeats >= 1, got repeats=" + std::to_string(repeats));
  }
  if (!stratified) return;
  if (static_cast<std::int64_t>(labels.size()) != n) {
    throw ConfigError("cv.stratified: stratified k-fold needs one label per sample: got " +
                      std::to_string(labels.size()) + " labels for n=" + std::to_string(n) + " samples");
  }
}

}  // namespace

FoldPlan make_fold_plan(std::int64_t n, const std::vector<std::int32_t>& labels, int k, int repeats, bool stratified,
                        std::uint64_t seed) {
  validate(n, labels, k, repeats, stratified);

  EncodedClasses classes;
  if (stratified) {
    classes = encode_by_first_appearance(labels);
    std::size_t largest = 0;
    for (const auto& m : classes.members) largest = std::max(largest, m.size());
    // scikit-learn's rule: only an error when no class can reach every fold.
    if (static_cast<std::size_t>(k) > largest) {
      throw ConfigError("cv.folds: stratified k-fold: k=" + std::to_string(k) +
                        " cannot be greater than the number of members in each class (largest class has " +
                        std::to_string(largest) + " samples; use fewer folds or cv.stratified=false)");
    }
  }

  FoldPlan plan;
  plan.k = k;
  plan.repeats = repeats;
  plan.stratified = stratified;
  plan.seed = seed;
  plan.folds.reserve(static_cast<std::size_t>(k) * static_cast<std::size_t>(repeats));
  for (int r = 0; r < repeats; ++r) {
    std::vector<int> test_fold;
    if (stratified) {
      SplitMix64 g(stream_seed(seed, Stream::Folds, static_cast<std::uint64_t>(r)));
      test_fold = stratified_test_folds(n, classes, k, g);
    } else {
      test_fold = plain_test_folds(n, k, seed, r);
    }
    for (int f = 0; f < k; ++f) {
      Fold fold;
      fold.repeat = r;
      fold.index = f;
      // Scanning indices in order yields both lists already sorted.
      for (std::int64_t i = 0; i < n; ++i) (test_fold[i] == f ? fold.held_out : fold.train).push_back(i);
      plan.folds.push_back(std::move(fold));
    }
  }
  return plan;
}

FoldPlan make_time_fold_plan(std::int64_t n, int k, std::int64_t gap) {
  if (k < 2) {
    throw ConfigError("cv.folds: cross-validation needs k >= 2 folds (at least one train/test split), got k=" +
                      std::to_string(k));
  }
  const std::int64_t block = n / (k + 1);
  const std::int64_t first_test = n - k * block;
  if (block < 1 || first_test - gap < 1) {
    throw ConfigError("cv.folds: time-ordered folds: " + std::to_string(n) + " rows give " + std::to_string(k) +
                      " held-out blocks of " + std::to_string(block) + " rows and leave " +
                      std::to_string(std::max<std::int64_t>(0, first_test - gap)) +
                      " training rows for the first fold" +
                      (gap > 0 ? " after the gap of " + std::to_string(gap) + " rows" : std::string()) +
                      "; use fewer folds or more data");
  }
  FoldPlan plan;
  plan.k = k;
  plan.repeats = 1;
  plan.scheme = "time";
  plan.gap = gap;
  for (int f = 0; f < k; ++f) {
    Fold fold;
    fold.index = f;
    const std::int64_t start = first_test + f * block;
    for (std::int64_t i = 0; i < start - gap; ++i) fold.train.push_back(i);
    for (std::int64_t i = start; i < start + block; ++i) fold.held_out.push_back(i);
    plan.folds.push_back(std::move(fold));
  }
  return plan;
}

}  // namespace hpctrain
