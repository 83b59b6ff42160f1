#include "models/NormPoolKernels.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "models/KernelTargets.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HPCTRAIN_AVX512 1
#endif

namespace hpctrain::kernels {
namespace {

constexpr int kLanes = 16;
std::atomic<bool> scalar_only{false};

// NaN passes, as in LibTorch's relu.
inline float relu(float v) {
  return v < 0.f ? 0.f : v;
}

// Batch norm's output, x * alpha + beta; for bfloat16 tensors rounded as the layer's output is,
// so that the pool compares (and ties) what the layers' pool compares.
inline float normalized(float x, float a, float b, bool bf16) {
  const float v = x * a + b;
  return bf16 ? round_bf16(v) : v;
}

// The pooled row `oh` of one plane (the portable form of pool_row_avx512). `!(v <= m)` is
// LibTorch's `v > m || isnan(v)` wherever m is a number, and m is NaN only where the whole
// channel is (its statistics include every value), so that all four are NaN and both rules
// pick the last.
void pool_row_scalar(const float* __restrict r0, const float* __restrict r1, std::int64_t wo, float a, float b,
                     float* __restrict out, std::uint8_t* __restrict where, float* __restrict at, bool bf16) {
  for (std::int64_t ow = 0; ow < wo; ++ow) {
    const float x0 = r0[2 * ow], x1 = r0[2 * ow + 1], x2 = r1[2 * ow], x3 = r1[2 * ow + 1];
    const float v0 = relu(normalized(x0, a, b, bf16)), v1 = relu(normalized(x1, a, b, bf16)),
                v2 = relu(normalized(x2, a, b, bf16)), v3 = relu(normalized(x3, a, b, bf16));
    float m = v0, xm = x0;
    std::uint8_t k = 0;
    bool t = !(v1 <= m);
    m = t ? v1 : m;
    xm = t ? x1 : xm;
    k = t ? 1 : k;
    t = !(v2 <= m);
    m = t ? v2 : m;
    xm = t ? x2 : xm;
    k = t ? 2 : k;
    t = !(v3 <= m);
    m = t ? v3 : m;
    xm = t ? x3 : xm;
    k = t ? 3 : k;
    out[ow] = m;
    at[ow] = xm;
    where[ow] = k;
  }
}

// The ReLU-masked gradient of one plane's windows summed, plain and times (at - mean).
// Lane j sums the values j, j + kLanes, ... (the last, short block too); lanes are added in
// double in order. The AVX-512 form below keeps the same lanes: the same bits.
PlaneSums add_lanes(const float* s, const float* sx) {
  PlaneSums r;
  for (int j = 0; j < kLanes; ++j) r.sum += s[j], r.weighted += sx[j];
  return r;
}

PlaneSums plane_grad_sums_scalar(const float* g, const float* out, const float* at, std::int64_t n, float mean) {
  float s[kLanes] = {}, sx[kLanes] = {};
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = out[i] > 0.f ? g[i] : 0.f;
    s[i % kLanes] += gi;
    sx[i % kLanes] += gi * (at[i] - mean);
  }
  return add_lanes(s, sx);
}

struct GradConstants {
  float mean, mean_g, k, scale;
  float operator()(float dy, float x) const { return ((dy - (x - mean) * k) - mean_g) * scale; }
};

// Input gradient of one pooled row's two input rows.
void grad_row_scalar(const float* __restrict r0, const float* __restrict r1, const float* __restrict g,
                     const float* __restrict out, const std::uint8_t* __restrict where, std::int64_t wo,
                     const GradConstants& c, float* __restrict d0, float* __restrict d1) {
  for (std::int64_t ow = 0; ow < wo; ++ow) {
    const float gi = out[ow] > 0.f ? g[ow] : 0.f;
    const int k = where[ow];
    d0[2 * ow] = c(k == 0 ? gi : 0.f, r0[2 * ow]);
    d0[2 * ow + 1] = c(k == 1 ? gi : 0.f, r0[2 * ow + 1]);
    d1[2 * ow] = c(k == 2 ? gi : 0.f, r1[2 * ow]);
    d1[2 * ow + 1] = c(k == 3 ? gi : 0.f, r1[2 * ow + 1]);
  }
}

#ifdef HPCTRAIN_AVX512
// The window loops with AVX-512: a pooled row is short (14 or 7 windows for 28x28 images), too
// short for the compiler's vector loop and its scalar remainder, so 16 windows at a time with
// masked loads and stores, the two columns of each window split apart by permutes. Same
// operations in the same order as the scalar loops: the same bits.
#define HPCTRAIN_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

struct Deinterleave {
  __m512i even, odd, lo, hi;
  HPCTRAIN_AVX512_TARGET Deinterleave()
      : even(_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)),
        odd(_mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)),
        lo(_mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)),
        hi(_mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)) {}
};

// Masks for `n` (1..16) windows: the outputs, and the first and second 16 of the 2n inputs.
struct WindowMasks {
  __mmask16 out, lo, hi;
  explicit WindowMasks(std::int64_t n)
      : out(static_cast<__mmask16>((1u << n) - 1)),
        lo(static_cast<__mmask16>(n >= 8 ? 0xFFFFu : (1u << (2 * n)) - 1)),
        hi(static_cast<__mmask16>(n > 8 ? (1u << (2 * n - 16)) - 1 : 0)) {}
};

// Even and odd columns of 2n values from `row`.
HPCTRAIN_AVX512_TARGET inline void load_pairs(const float* row, const WindowMasks& m, const Deinterleave& d,
                                              __m512& even, __m512& odd) {
  const __m512 a = _mm512_maskz_loadu_ps(m.lo, row), b = _mm512_maskz_loadu_ps(m.hi, row + 16);
  even = _mm512_permutex2var_ps(a, d.even, b);
  odd = _mm512_permutex2var_ps(a, d.odd, b);
}

HPCTRAIN_AVX512_TARGET inline void store_pairs(float* row, const WindowMasks& m, const Deinterleave& d, __m512 even,
                                               __m512 odd) {
  _mm512_mask_storeu_ps(row, m.lo, _mm512_permutex2var_ps(even, d.lo, odd));
  _mm512_mask_storeu_ps(row + 16, m.hi, _mm512_permutex2var_ps(even, d.hi, odd));
}

HPCTRAIN_AVX512_TARGET inline __m512 round_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_maskz_srli_epi32(0xFFFF, bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(bits, lsb), _mm512_set1_epi32(0x7FFF)),
                                           _mm512_set1_epi32(static_cast<int>(0xFFFF0000u)));
  return _mm512_mask_mov_ps(_mm512_castsi512_ps(rounded), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
}

HPCTRAIN_AVX512_TARGET void pool_row_avx512(const float* r0, const float* r1, std::int64_t wo, float a, float b,
                                            float* out, std::uint8_t* where, float* at, bool bf16) {
  const Deinterleave d;
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), zero = _mm512_setzero_ps();
  for (std::int64_t ow = 0; ow < wo; ow += 16) {
    const WindowMasks m(std::min<std::int64_t>(16, wo - ow));
    __m512 x[4];
    load_pairs(r0 + 2 * ow, m, d, x[0], x[1]);
    load_pairs(r1 + 2 * ow, m, d, x[2], x[3]);
    __m512 best = zero, xbest = x[0];
    __m512i k = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {
      __m512 v = _mm512_add_ps(_mm512_mul_ps(x[j], va), vb);
      if (bf16) v = round_bf16(v);
      v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);  // relu, NaN passes
      if (j == 0) {
        best = v;
        continue;
      }
      const __mmask16 t = _mm512_cmp_ps_mask(v, best, _CMP_NLE_UQ);  // !(v <= best)
      best = _mm512_mask_mov_ps(best, t, v);
      xbest = _mm512_mask_mov_ps(xbest, t, x[j]);
      k = _mm512_mask_mov_epi32(k, t, _mm512_set1_epi32(j));
    }
    _mm512_mask_storeu_ps(out + ow, m.out, best);
    _mm512_mask_storeu_ps(at + ow, m.out, xbest);
    _mm512_mask_cvtepi32_storeu_epi8(where + ow, m.out, k);
  }
}

HPCTRAIN_AVX512_TARGET void grad_row_avx512(const float* r0, const float* r1, const float* g, const float* out,
                                            const std::uint8_t* where, std::int64_t wo, const GradConstants& c,
                                            float* d0, float* d1) {
  const Deinterleave d;
  const __m512 zero = _mm512_setzero_ps(), mean = _mm512_set1_ps(c.mean), k = _mm512_set1_ps(c.k),
               mean_g = _mm512_set1_ps(c.mean_g), scale = _mm512_set1_ps(c.scale);
  for (std::int64_t ow = 0; ow < wo; ow += 16) {
    const WindowMasks m(std::min<std::int64_t>(16, wo - ow));
    const __m512 active = _mm512_maskz_loadu_ps(m.out, out + ow);
    const __m512 gi =
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(active, zero, _CMP_GT_OQ), _mm512_maskz_loadu_ps(m.out, g + ow));
    const __m512i pos =
        _mm512_mask_cvtepu8_epi32(_mm512_setzero_si512(), m.out, _mm_maskz_loadu_epi8(m.out, where + ow));
    __m512 x[4];
    load_pairs(r0 + 2 * ow, m, d, x[0], x[1]);
    load_pairs(r1 + 2 * ow, m, d, x[2], x[3]);
    for (int j = 0; j < 4; ++j) {
      const __m512 dy = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(pos, _mm512_set1_epi32(j)), gi);
      const __m512 proj = _mm512_mul_ps(_mm512_sub_ps(x[j], mean), k);
      x[j] = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(dy, proj), mean_g), scale);
    }
    store_pairs(d0 + 2 * ow, m, d, x[0], x[1]);
    store_pairs(d1 + 2 * ow, m, d, x[2], x[3]);
  }
}

HPCTRAIN_AVX512_TARGET PlaneSums plane_grad_sums_avx512(const float* g, const float* out, const float* at,
                                                        std::int64_t n, float mean) {
  const __m512 zero = _mm512_setzero_ps(), vmean = _mm512_set1_ps(mean);
  __m512 s = zero, sx = zero;
  for (std::int64_t i = 0; i < n; i += kLanes) {
    const auto m = static_cast<__mmask16>(n - i >= kLanes ? 0xFFFFu : (1u << (n - i)) - 1);
    const __m512 o = _mm512_maskz_loadu_ps(m, out + i);
    const __m512 gi = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(o, zero, _CMP_GT_OQ), _mm512_maskz_loadu_ps(m, g + i));
    s = _mm512_add_ps(s, gi);
    sx = _mm512_add_ps(sx, _mm512_mul_ps(gi, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, at + i), vmean)));
  }
  alignas(64) float ls[kLanes], lsx[kLanes];
  _mm512_store_ps(ls, s);
  _mm512_store_ps(lsx, sx);
  return add_lanes(ls, lsx);
}

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return yes && !scalar_only.load(std::memory_order_relaxed);
}
#endif

void pool_row(const float* r0, const float* r1, std::int64_t wo, float a, float b, float* out, std::uint8_t* where,
              float* at, bool bf16) {
#ifdef HPCTRAIN_AVX512
  if (has_avx512()) return pool_row_avx512(r0, r1, wo, a, b, out, where, at, bf16);
#endif
  pool_row_scalar(r0, r1, wo, a, b, out, where, at, bf16);
}

PlaneSums plane_grad_sums(const float* g, const float* out, const float* at, std::int64_t n, float mean) {
#ifdef HPCTRAIN_AVX512
  if (has_avx512()) return plane_grad_sums_avx512(g, out, at, n, mean);
#endif
  return plane_grad_sums_scalar(g, out, at, n, mean);
}

void grad_row(const float* r0, const float* r1, const float* g, const float* out, const std::uint8_t* where,
              std::int64_t wo, const GradConstants& c, float* d0, float* d1) {
#ifdef HPCTRAIN_AVX512
  if (has_avx512()) return grad_row_avx512(r0, r1, g, out, where, wo, c, d0, d1);
#endif
  grad_row_scalar(r0, r1, g, out, where, wo, c, d0, d1);
}

void pool_plane(const float* p, const Planes& s, float a, float b, float* out, std::uint8_t* where, float* at,
                bool bf16) {
  const std::int64_t wo = s.w / 2;
  for (std::int64_t oh = 0; oh < s.h / 2; ++oh) {
    const float* r0 = p + 2 * oh * s.w;
    pool_row(r0, r0 + s.w, wo, a, b, out + oh * wo, where + oh * wo, at + oh * wo, bf16);
  }
}

void grad_plane(const float* x, const float* g, const float* out, const std::uint8_t* where, const Planes& s,
                const GradConstants& gc, float* dx) {
  const std::int64_t wo = s.w / 2;
  for (std::int64_t oh = 0; oh < s.h / 2; ++oh) {
    const std::int64_t r = 2 * oh * s.w;
    grad_row(x + r, x + r + s.w, g + oh * wo, out + oh * wo, where + oh * wo, wo, gc, dx + r, dx + r + s.w);
    if (s.w % 2 != 0) {  // the last column, in no window
      dx[r + s.w - 1] = gc(0.f, x[r + s.w - 1]);
      dx[r + 2 * s.w - 1] = gc(0.f, x[r + 2 * s.w - 1]);
    }
  }
  if (s.h % 2 != 0) {  // the last row, in no window
    const std::int64_t r = (s.h - 1) * s.w;
    for (std::int64_t j = 0; j < s.w; ++j) dx[r + j] = gc(0.f, x[r + j]);
  }
}

}  // namespace

PlaneSums relu_grad_sums(const float* g, const float* out, const float* at, std::int64_t n, float mean) {
  return plane_grad_sums(g, out, at, n, mean);
}

void use_scalar_loops(bool on) {
  scalar_only.store(on, std::memory_order_relaxed);
}

template <typename T>
void norm_relu_pool(const T* x, const Planes& s, std::int64_t c0, std::int64_t c1, const float* alpha,
                    const float* beta, T* out, std::uint8_t* where, float* at) {
  auto& buf = scratch();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t i = (n * s.c + c) * s.plane(), o = (n * s.c + c) * s.out_plane();
      float* result = float_target(out + o, s.out_plane(), buf.b);
      pool_plane(as_float(x + i, s.plane(), buf.a), s, alpha[c], beta[c], result, where + o, at + o,
                 !std::is_same_v<T, float>);
      store(result, s.out_plane(), out + o);
    }
}

template <typename T>
void norm_relu_pool_sums(const T* grad_out, const T* out, const float* at, const Planes& s, std::int64_t c0,
                         std::int64_t c1, const float* mean, double* sum_g, double* sum_gx) {
  const std::int64_t plane = s.out_plane();
  auto& buf = scratch();
  for (std::int64_t c = c0; c < c1; ++c) {
    sum_g[c] = 0;
    sum_gx[c] = 0;
    for (std::int64_t n = 0; n < s.n; ++n) {
      const std::int64_t o = (n * s.c + c) * plane;
      const auto r = plane_grad_sums(as_float(grad_out + o, plane, buf.a), as_float(out + o, plane, buf.b), at + o,
                                     plane, mean[c]);
      sum_g[c] += r.sum;
      sum_gx[c] += r.weighted;
    }
  }
}

template <typename T>
void norm_relu_pool_input_grad(const T* x, const T* grad_out, const T* out, const std::uint8_t* where, const Planes& s,
                               std::int64_t c0, std::int64_t c1, const float* mean, const float* mean_g, const float* k,
                               const float* scale, T* dx) {
  auto& buf = scratch();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t c = c0; c < c1; ++c) {
      const GradConstants gc{mean[c], mean_g[c], k[c], scale[c]};
      const std::int64_t i = (n * s.c + c) * s.plane(), o = (n * s.c + c) * s.out_plane();
      float* result = float_target(dx + i, s.plane(), buf.d);
      grad_plane(as_float(x + i, s.plane(), buf.a), as_float(grad_out + o, s.out_plane(), buf.b),
                 as_float(out + o, s.out_plane(), buf.c), where + o, s, gc, result);
      store(result, s.plane(), dx + i);
    }
}

#define HPCTRAIN_NORM_POOL_TYPES(T)                                                                                    \
  template void norm_relu_pool<T>(const T*, const Planes&, std::int64_t, std::int64_t, const float*, const float*, T*, \
                                  std::uint8_t*, float*);                                                              \
  template void norm_relu_pool_sums<T>(const T*, const T*, const float*, const Planes&, std::int64_t, std::int64_t,    \
                                       const float*, double*, double*);                                                \
  template void norm_relu_pool_input_grad<T>(const T*, const T*, const T*, const std::uint8_t*, const Planes&,         \
                                             std::int64_t, std::int64_t, const float*, const float*, const float*,     \
                                             const float*, T*);
HPCTRAIN_NORM_POOL_TYPES(float)
HPCTRAIN_NORM_POOL_TYPES(Bf16)
#undef HPCTRAIN_NORM_POOL_TYPES

}  // namespace hpctrain::kernels
