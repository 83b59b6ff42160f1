#include "util/Random.hpp"

#include <utility>

namespace hpctrain {

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t SplitMix64::below(std::uint64_t bound) {
  // Lemire: multiply-shift with rejection of the biased low region.
  unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
  auto low = static_cast<std::uint64_t>(m);
  if (low < bound) {
    const std::uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(next()) * bound;
      low = static_cast<std::uint64_t>(m);
    }
  }
  return static_cast<std::uint64_t>(m >> 64);
}

std::uint64_t stream_seed(std::uint64_t seed, Stream stream, std::uint64_t index) {
  SplitMix64 g(seed);
  std::uint64_t s = g.next() ^ (static_cast<std::uint64_t>(stream) * 0xd1b54a32d192ed03ULL);
  SplitMix64 h(s);
  return h.next() ^ (index * 0x8cb92ba72f3d8dd7ULL);
}

std::vector<std::int64_t> global_permutation(std::int64_t n, std::uint64_t seed, Stream stream, std::uint64_t index) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) p[i] = i;
  SplitMix64 g(stream_seed(seed, stream, index));
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(g.below(static_cast<std::uint64_t>(i + 1)));
    std::swap(p[i], p[j]);
  }
  return p;
}

}  // namespace hpctrain
