#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "data/Sampling.hpp"

using namespace hpctrain;

TEST(GlobalPermutation, IsAPermutationAndDeterministic) {
  const auto a = global_permutation(1000, 42, Stream::EpochOrder, 3);
  const auto b = global_permutation(1000, 42, Stream::EpochOrder, 3);
  EXPECT_EQ(a, b);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 1000; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_NE(a, global_permutation(1000, 42, Stream::EpochOrder, 4));  // another epoch
  EXPECT_NE(a, global_permutation(1000, 43, Stream::EpochOrder, 3));  // another seed
}

TEST(GlobalPermutation, FixedValuesPinTheOrderAcrossBuilds) {
  // Golden values, computed once (hpctrain 0.1.0). Every sample order, validation split,
  // fold, augmentation draw and model initialisation comes from these streams: a change to
  // the generator, the stream derivation or the shuffle reorders every run and breaks
  // resuming a checkpoint written by an earlier version (its epoch would continue in another
  // order). If this fails, the change is a format break: do not just update the numbers.
  SplitMix64 g(0);  // SplitMix64's reference outputs for seed 0
  EXPECT_EQ(g.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(g.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(g.next(), 0x06c45d188009454fULL);
  SplitMix64 b(7);  // Lemire's bounded draw
  std::vector<std::uint64_t> draws;
  for (int i = 0; i < 8; ++i) draws.push_back(b.below(1000));
  EXPECT_EQ(draws, (std::vector<std::uint64_t>{389, 16, 900, 582, 452, 249, 467, 328}));
  // The stream derivation, seed 42.
  EXPECT_EQ(stream_seed(42, Stream::ValidationSplit), 0x79c32cd79ccd877eULL);
  EXPECT_EQ(stream_seed(42, Stream::EpochOrder), 0x205aeffdcb607d27ULL);
  EXPECT_EQ(stream_seed(42, Stream::Augment), 0xd2b87b4b6561bf17ULL);
  EXPECT_EQ(stream_seed(42, Stream::Model), 0xb4469f59c28a0c7aULL);
  EXPECT_EQ(stream_seed(42, Stream::Folds), 0xa98b4bd1676005efULL);
  EXPECT_EQ(stream_seed(42, Stream::Search), 0xe6ace5399c4322ddULL);
  EXPECT_EQ(stream_seed(42, Stream::EpochOrder, 3), 0x86716d0846d8d4a2ULL);
  // The shuffle: epochs 0 and 1 and the validation split of 20 samples, whole.
  EXPECT_EQ(global_permutation(20, 42, Stream::EpochOrder, 0),
            (std::vector<std::int64_t>{16, 4, 15, 12, 7, 9, 1, 19, 6, 3, 10, 8, 14, 13, 2, 0, 11, 5, 18, 17}));
  EXPECT_EQ(global_permutation(20, 42, Stream::EpochOrder, 1),
            (std::vector<std::int64_t>{12, 13, 1, 0, 2, 17, 10, 14, 6, 18, 9, 5, 15, 7, 4, 8, 16, 19, 11, 3}));
  EXPECT_EQ(global_permutation(20, 42, Stream::ValidationSplit, 0),
            (std::vector<std::int64_t>{13, 11, 8, 18, 16, 5, 2, 12, 14, 1, 17, 3, 6, 15, 7, 10, 4, 19, 9, 0}));
  // A Fashion-MNIST-sized epoch: samples at the start, the middle and the end.
  const auto big = global_permutation(60000, 42, Stream::EpochOrder, 0);
  EXPECT_EQ(big[0], 19459);
  EXPECT_EQ(big[1], 51497);
  EXPECT_EQ(big[29999], 39636);
  EXPECT_EQ(big[59999], 51069);
}

TEST(SplitMix64, BelowIsRoughlyUniform) {
  SplitMix64 g(7);
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[g.below(6)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(Partition, BlockRangesCoverWithoutOverlap) {
  for (std::int64_t n : {0, 1, 7, 100, 60000}) {
    for (int p : {1, 2, 3, 4, 7, 16}) {
      std::int64_t expected_begin = 0;
      for (int r = 0; r < p; ++r) {
        const Range range = block_range(n, p, r);
        EXPECT_EQ(range.begin, expected_begin);
        EXPECT_LE(range.size(), n / p + 1);
        expected_begin = range.end;
      }
      EXPECT_EQ(expected_begin, n);
    }
  }
}

TEST(Partition, BatchSlicesSumToTheGlobalBatch) {
  for (std::int64_t b : {1, 5, 128, 129}) {
    for (int p = 1; p <= 8 && p <= b; ++p) {
      std::int64_t next = 0;
      for (int r = 0; r < p; ++r) {
        const Range s = batch_slice(b, p, r);
        EXPECT_EQ(s.begin, next);
        next = s.end;
      }
      EXPECT_EQ(next, b);
    }
  }
}

TEST(TrainValidationSplit, DisjointCoveringAndSized) {
  const auto s = split_train_validation(1000, 0.1, 5);
  EXPECT_EQ(s.validation.size(), 100u);
  EXPECT_EQ(s.train.size(), 900u);
  std::set<std::int64_t> all(s.train.begin(), s.train.end());
  for (auto v : s.validation) EXPECT_TRUE(all.insert(v).second);
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_TRUE(std::is_sorted(s.train.begin(), s.train.end()));
  EXPECT_EQ(split_train_validation(1000, 0.0, 5).validation.size(), 0u);
}

TEST(EpochSamples, GlobalBatchesAreTheSameForAnyRankCount) {
  const auto split = split_train_validation(1003, 0.1, 9);
  const std::int64_t batch = 37;
  for (std::int64_t epoch : {0, 1, 5}) {
    const auto reference = epoch_samples_for_rank(split.train, batch, epoch, 9, 1, 0);
    EXPECT_EQ(static_cast<std::int64_t>(reference.size()), steps_per_epoch(903, batch) * batch);
    for (int p : {2, 3, 4, 8}) {
      std::vector<std::vector<std::int64_t>> per_rank;
      for (int r = 0; r < p; ++r) per_rank.push_back(epoch_samples_for_rank(split.train, batch, epoch, 9, p, r));
      // Reassemble global batch k from each rank's k-th slice.
      std::vector<std::int64_t> rebuilt;
      for (std::int64_t k = 0; k < steps_per_epoch(903, batch); ++k) {
        for (int r = 0; r < p; ++r) {
          const auto n = batch_slice(batch, p, r).size();
          rebuilt.insert(rebuilt.end(), per_rank[r].begin() + k * n, per_rank[r].begin() + (k + 1) * n);
        }
      }
      EXPECT_EQ(rebuilt, reference) << "ranks " << p << " epoch " << epoch;
    }
  }
}

TEST(EpochSamples, AnEpochVisitsEachTrainingSampleAtMostOnce) {
  const auto split = split_train_validation(500, 0.2, 1);
  const auto order = epoch_samples_for_rank(split.train, 16, 2, 1, 1, 0);
  std::set<std::int64_t> seen(order.begin(), order.end());
  EXPECT_EQ(seen.size(), order.size());
  std::set<std::int64_t> val(split.validation.begin(), split.validation.end());
  for (auto i : order) EXPECT_EQ(val.count(i), 0u);
}
