#include "models/DropoutKernels.hpp"

#include "models/KernelPlanes.hpp"
#include "models/KernelTargets.hpp"

namespace hpctrain::kernels {
namespace {

// Chris Wellons' lowbias32: every input bit flips each output bit with probability close to 1/2.
inline std::uint32_t mix(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

inline std::uint32_t draw(std::uint64_t seed, std::int64_t i) {
  const auto index = static_cast<std::uint64_t>(i);
  const auto k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  return mix(mix(static_cast<std::uint32_t>(index) ^ k0) ^ static_cast<std::uint32_t>(index >> 32) ^ k1);
}

}  // namespace

HPCTRAIN_CLONES void apply_dropout_mask(const float* __restrict in, std::int64_t begin, std::int64_t end,
                                        std::uint64_t seed, std::uint32_t threshold, float scale,
                                        float* __restrict out) {
  for (std::int64_t i = begin; i < end; ++i) out[i] = draw(seed, i) >= threshold ? in[i] * scale : 0.f;
}

HPCTRAIN_CLONES void apply_dropout_mask(const std::uint16_t* __restrict in, std::int64_t begin, std::int64_t end,
                                        std::uint64_t seed, std::uint32_t threshold, float scale,
                                        std::uint16_t* __restrict out) {
  for (std::int64_t i = begin; i < end; ++i)
    out[i] = draw(seed, i) >= threshold ? bf16_bits(bf16_value(in[i]) * scale) : Bf16{0};
}

bool dropout_keeps(std::uint64_t seed, std::int64_t i, std::uint32_t threshold) {
  return draw(seed, i) >= threshold;
}

}  // namespace hpctrain::kernels
