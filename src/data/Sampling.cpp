#include "data/Sampling.hpp"

#include <algorithm>
#include <cmath>

namespace hpctrain {

Range block_range(std::int64_t n, int parts, int part) {
  return Range{n * part / parts, n * (part + 1) / parts};
}

Range batch_slice(std::int64_t batch, int ranks, int rank) {
  const std::int64_t base = batch / ranks, extra = batch % ranks;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  return Range{begin, begin + base + (rank < extra ? 1 : 0)};
}

TrainValSplit split_train_validation(std::int64_t n_train, double val_fraction, std::uint64_t seed) {
  const auto n_val = static_cast<std::int64_t>(std::llround(val_fraction * static_cast<double>(n_train)));
  auto p = global_permutation(n_train, seed, Stream::ValidationSplit);
  TrainValSplit s;
  s.validation.assign(p.begin(), p.begin() + n_val);
  s.train.assign(p.begin() + n_val, p.end());
  std::sort(s.validation.begin(), s.validation.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

std::int64_t steps_per_epoch(std::int64_t n_train, std::int64_t batch) {
  return n_train / batch;
}

std::vector<std::int64_t> epoch_samples_for_rank(const std::vector<std::int64_t>& train, std::int64_t batch,
                                                 std::int64_t epoch, std::uint64_t seed, int ranks, int rank) {
  const auto n = static_cast<std::int64_t>(train.size());
  const auto order = global_permutation(n, seed, Stream::EpochOrder, static_cast<std::uint64_t>(epoch));
  const std::int64_t steps = steps_per_epoch(n, batch);
  const Range slice = batch_slice(batch, ranks, rank);
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(steps * slice.size()));
  for (std::int64_t s = 0; s < steps; ++s) {
    for (std::int64_t i = slice.begin; i < slice.end; ++i) out.push_back(train[order[s * batch + i]]);
  }
  return out;
}

}  // namespace hpctrain
