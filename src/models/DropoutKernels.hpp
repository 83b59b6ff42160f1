#pragma once
// The loop behind models/CounterDropout.hpp: out[i] = in[i] * scale where element i is kept,
// 0 where it is dropped. Whether element i is kept is a function of (seed, i) alone, a
// counter-based generator: two rounds of a 32-bit avalanche mix (lowbias32) keyed by the seed,
// compared with `threshold` (keep when the draw is >= threshold, so P(drop) = threshold / 2^32).
// So the backward regenerates the forward's mask from the seed instead of storing it, any
// range of elements can be drawn on any thread in any order, and sixteen draws take a few
// vector instructions. No LibTorch here: compiled at -O3 with a clone per instruction set.
#include <cstdint>

namespace hpctrain::kernels {

// Elements [begin, end) of `in` into `out` (the same positions).
void apply_dropout_mask(const float* in, std::int64_t begin, std::int64_t end, std::uint64_t seed,
                        std::uint32_t threshold, float scale, float* out);

// The same for bfloat16 tensors (as their 16 bits): the kept value times `scale` in float,
// rounded to the nearest bfloat16.
void apply_dropout_mask(const std::uint16_t* in, std::int64_t begin, std::int64_t end, std::uint64_t seed,
                        std::uint32_t threshold, float scale, std::uint16_t* out);

// Whether element i is kept (for tests).
bool dropout_keeps(std::uint64_t seed, std::int64_t i, std::uint32_t threshold);

}  // namespace hpctrain::kernels
