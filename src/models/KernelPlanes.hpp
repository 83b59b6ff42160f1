#pragma once
// What hpctrain's fused CPU operators over NCHW planes share (models/NormPoolKernels.hpp,
// models/NormActKernels.hpp): the planes' shape, bfloat16 as its 16 bits, per-channel moments,
// and per-thread scratch planes into which bfloat16 planes are widened to float, computed on as
// float, and rounded back. No LibTorch here: the definitions are compiled at -O3, the loops one
// clone per instruction set (models/KernelTargets.hpp).
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace hpctrain::kernels {

struct Planes {
  std::int64_t n, c, h, w;  // [n, c, h, w]; a pooled output [n, c, h / 2, w / 2]
  std::int64_t plane() const { return h * w; }
  std::int64_t out_plane() const { return (h / 2) * (w / 2); }
};

// bfloat16 values as their 16 bits (the layout of LibTorch's at::BFloat16). Each kernel
// exists for float and Bf16 tensors; bfloat16 is widened to float per plane, computed on as
// float and rounded back to nearest even.
using Bf16 = std::uint16_t;

// mean[c] and the sum of squared deviations from it, over every sample and position of
// channel c, for c in [c0, c1). Two passes: no E[x²] - E[x]² cancellation.
template <typename T>
void channel_moments(const T* x, const Planes& s, std::int64_t c0, std::int64_t c1, double* mean, double* squares);

// One bfloat16 value as float, and a float's nearest bfloat16 (ties to even; NaN stays NaN).
inline float bf16_value(Bf16 v) {
  const std::uint32_t bits = static_cast<std::uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline Bf16 bf16_bits(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const std::uint32_t rounded = (bits + ((bits >> 16) & 1u) + 0x7FFFu) >> 16;
  return v != v ? Bf16{0x7FC0} : static_cast<Bf16>(rounded);
}

// n bfloat16 values to float, and back (to nearest even; NaN stays NaN).
void widen(const Bf16* in, std::int64_t n, float* out);
void narrow(const float* in, std::int64_t n, Bf16* out);

// `v` rounded to the nearest bfloat16 (ties to even; NaN stays NaN), kept as a float: what a
// layer's bfloat16 output holds.
inline float round_bf16(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + ((bits >> 16) & 1u) + 0x7FFFu) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return v != v ? v : r;
}

// Scratch planes of the calling thread.
struct Scratch {
  std::vector<float> a, b, c, d;
};
Scratch& scratch();

// `p` as float: itself, or widened into `buffer`.
template <typename T>
const float* as_float(const T* p, std::int64_t n, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return p;
  } else {
    buffer.resize(static_cast<std::size_t>(n));
    widen(p, n, buffer.data());
    return buffer.data();
  }
}

// Where a plane of float results goes: `p` itself, or `buffer` until store() rounds it into p.
template <typename T>
float* float_target(T* p, std::int64_t n, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return p;
  } else {
    buffer.resize(static_cast<std::size_t>(n));
    return buffer.data();
  }
}

template <typename T>
void store(const float* result, std::int64_t n, T* p) {
  if constexpr (!std::is_same_v<T, float>) narrow(result, n, p);
}

}  // namespace hpctrain::kernels
