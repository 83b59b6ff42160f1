#pragma once
// The project's one random generator and its seeded streams: every order and draw that must
// be identical on any machine and rank count (epoch orders, splits, folds, search trials,
// augmentation) comes from here.
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

}  // namespace hpctrain
