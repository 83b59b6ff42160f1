#pragma once
// k-fold (optionally repeated, optionally stratified) assignment of the training split's
// samples. Torch-free and a pure function of its arguments, so every rank computes the
// same plan on its own and no plan has to be broadcast.
#include <cstdint>
#include <string>
#include <vector>

namespace hpctrain {

struct Fold {
  int repeat = 0;                      // 0..repeats-1
  int index = 0;                       // 0..k-1
  std::vector<std::int64_t> held_out;  // sorted sample indices (into the training split)
  std::vector<std::int64_t> train;     // sorted: every other index
};

struct FoldPlan {
  int k = 0, repeats = 1;
  bool stratified = false;
  std::uint64_t seed = 0;
  std::string scheme = "kfold";  // "kfold" or "time" (make_time_fold_plan)
  std::int64_t gap = 0;          // time: rows left out between a fold's training rows and its held-out block
  std::vector<Fold> folds;       // repeat-major: repeat 0 folds 0..k-1, then repeat 1 ...
};

// Builds `repeats` independent k-fold partitions of [0, n). Repeat r draws only from
// stream_seed(seed, Stream::Folds, r), so the plan never depends on the rank count.
//
// Plain: like scikit-learn's KFold(shuffle=True): a seeded permutation cut into k folds, the
// first n % k folds one larger. Stratified: like StratifiedKFold(shuffle=True): the number of
// samples of each class in each fold equals scikit-learn's for the same labels (classes are
// ordered by first appearance, as there); which samples of a class go to which fold is a
// seeded shuffle.
//
// labels: class of each sample; required when stratified, ignored otherwise (may be empty).
// A class with fewer than k members is allowed (some folds just lack it), as scikit-learn
// only warns then; it is an error only when every class has fewer than k members.
//
// Throws ConfigError when k < 2, k > n, repeats < 1, or when stratified with
// labels.size() != n or with k greater than the size of every class.
FoldPlan make_fold_plan(std::int64_t n, const std::vector<std::int32_t>& labels, int k, int repeats, bool stratified,
                        std::uint64_t seed);

// Forward chaining over rows in time order (scikit-learn's TimeSeriesSplit with `gap`): the
// held-out blocks are the last k blocks of n / (k + 1) rows; fold i holds out block i and
// trains on every row before it except the `gap` rows just before it. A window whose targets
// lie up to R steps past its end needs gap = R, so that no training target falls in the
// held-out block's period. Folds train on more rows as i grows; the first n - k * (n / (k + 1))
// rows are never held out. One repeat, never stratified.
//
// Throws ConfigError when k < 2, or when the first fold would train on no row (n too small
// for k blocks and the gap).
FoldPlan make_time_fold_plan(std::int64_t n, int k, std::int64_t gap);

}  // namespace hpctrain
