#pragma once
// Deterministic sample order, independent of the rank count: one global permutation per
// epoch from (seed, epoch), cut into global batches, each batch cut into per-rank slices.
#include <cstdint>
#include <vector>

#include "util/Random.hpp"

namespace hpctrain {

// Contiguous block partition: rank r of p owns [begin, end) of n items.
struct Range {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t size() const { return end - begin; }
};
Range block_range(std::int64_t n, int parts, int part);

// Rank r's slice of a global batch of `batch` samples split over `ranks` ranks: the first
// batch % ranks ranks take one sample more.
Range batch_slice(std::int64_t batch, int ranks, int rank);

// Training and validation indices carved from [0, n_train): a fixed permutation of the
// seed puts round(fraction * n) samples into validation. Both lists are sorted.
struct TrainValSplit {
  std::vector<std::int64_t> train;
  std::vector<std::int64_t> validation;
};
TrainValSplit split_train_validation(std::int64_t n_train, double val_fraction, std::uint64_t seed);

// The global indices rank `rank` processes in `epoch`, batch after batch: its slice of
// each of the epoch's `steps` global batches (the last partial batch is dropped).
std::vector<std::int64_t> epoch_samples_for_rank(const std::vector<std::int64_t>& train, std::int64_t batch,
                                                 std::int64_t epoch, std::uint64_t seed, int ranks, int rank);
std::int64_t steps_per_epoch(std::int64_t n_train, std::int64_t batch);

}  // namespace hpctrain
