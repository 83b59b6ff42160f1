#pragma once
// Deterministic sample order, independent of the rank count: one global permutation per
// epoch from (seed, epoch), cut into global batches, each batch cut into per-rank slices.
#include <cstdint>
#include <vector>

namespace hpctrain {

// Platform-independent generator (SplitMix64), so orders are identical everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  // Uniform in [0, bound) without modulo bias (Lemire's method).
  std::uint64_t below(std::uint64_t bound);
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

// Seeds for independent streams derived from the run seed.
enum class Stream : std::uint64_t {
  ValidationSplit = 1,
  EpochOrder = 2,
  Augment = 3,
  Model = 4,
  Folds = 5,
  Search = 6
};
std::uint64_t stream_seed(std::uint64_t seed, Stream stream, std::uint64_t index = 0);

// A permutation of [0, n) from (seed, stream, index).
std::vector<std::int64_t> global_permutation(std::int64_t n, std::uint64_t seed, Stream stream,
                                             std::uint64_t index = 0);

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
