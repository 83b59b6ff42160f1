#include "models/NormActKernels.hpp"

#include "models/KernelTargets.hpp"
#include "models/NormPoolKernels.hpp"

namespace hpctrain::kernels {
namespace {

// NaN passes, as in LibTorch's relu.
inline float relu(float v) {
  return v < 0.f ? 0.f : v;
}

// ReLU's gradient: g where the output is positive, else 0 (LibTorch's threshold_backward, but
// for a NaN output, which passes no gradient here). Both values are loaded unconditionally, so
// that the loops around it vectorize.
inline float relu_grad(float g, float out) {
  return out > 0.f ? g : 0.f;
}

template <bool kBf16, bool kResidual>
inline void act_loop(const float* __restrict x, const float* __restrict r, std::int64_t n, float a, float b,
                     float* __restrict out) {
  for (std::int64_t i = 0; i < n; ++i) {
    float v = x[i] * a + b;
    if constexpr (kBf16) v = round_bf16(v);
    if constexpr (kResidual) {
      v = v + r[i];
      if constexpr (kBf16) v = round_bf16(v);
    }
    out[i] = relu(v);
  }
}

// One plane of the forward (each case its own loop, so that each vectorizes).
HPCTRAIN_CLONES void act_plane(const float* x, const float* r, std::int64_t n, float a, float b, bool bf16,
                               float* out) {
  if (bf16) {
    r ? act_loop<true, true>(x, r, n, a, b, out) : act_loop<true, false>(x, r, n, a, b, out);
  } else {
    r ? act_loop<false, true>(x, r, n, a, b, out) : act_loop<false, false>(x, r, n, a, b, out);
  }
}

// The residual's gradient: ReLU's.
HPCTRAIN_CLONES void masked_grad_plane(const float* __restrict g, const float* __restrict out, std::int64_t n,
                                       float* __restrict masked) {
  for (std::int64_t i = 0; i < n; ++i) masked[i] = relu_grad(g[i], out[i]);
}

HPCTRAIN_CLONES void input_grad_plane(const float* __restrict x, const float* __restrict g, const float* __restrict out,
                                      std::int64_t n, float mean, float mean_g, float k, float scale,
                                      float* __restrict dx) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = relu_grad(g[i], out[i]);
    dx[i] = ((gi - (x[i] - mean) * k) - mean_g) * scale;
  }
}

}  // namespace

template <typename T>
void norm_act(const T* x, const T* residual, const Planes& s, std::int64_t c0, std::int64_t c1, const float* alpha,
              const float* beta, T* out) {
  auto& buf = scratch();
  const std::int64_t plane = s.plane();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t i = (n * s.c + c) * plane;
      const float* r = residual ? as_float(residual + i, plane, buf.b) : nullptr;
      float* result = float_target(out + i, plane, buf.c);
      act_plane(as_float(x + i, plane, buf.a), r, plane, alpha[c], beta[c], !std::is_same_v<T, float>, result);
      store(result, plane, out + i);
    }
}

template <typename T>
void norm_act_sums(const T* grad_out, const T* out, const T* x, const Planes& s, std::int64_t c0, std::int64_t c1,
                   const float* mean, double* sum_g, double* sum_gx, T* grad_residual) {
  auto& buf = scratch();
  const std::int64_t plane = s.plane();
  for (std::int64_t c = c0; c < c1; ++c) {
    sum_g[c] = 0;
    sum_gx[c] = 0;
    for (std::int64_t n = 0; n < s.n; ++n) {
      const std::int64_t i = (n * s.c + c) * plane;
      float* masked = grad_residual ? float_target(grad_residual + i, plane, buf.d) : nullptr;
      const float* g = as_float(grad_out + i, plane, buf.a);
      const float* o = as_float(out + i, plane, buf.b);
      const auto r = relu_grad_sums(g, o, as_float(x + i, plane, buf.c), plane, mean[c]);
      if (masked) {
        masked_grad_plane(g, o, plane, masked);
        store(masked, plane, grad_residual + i);
      }
      sum_g[c] += r.sum;
      sum_gx[c] += r.weighted;
    }
  }
}

template <typename T>
void norm_act_input_grad(const T* x, const T* grad_out, const T* out, const Planes& s, std::int64_t c0, std::int64_t c1,
                         const float* mean, const float* mean_g, const float* k, const float* scale, T* dx) {
  auto& buf = scratch();
  const std::int64_t plane = s.plane();
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t i = (n * s.c + c) * plane;
      float* result = float_target(dx + i, plane, buf.d);
      input_grad_plane(as_float(x + i, plane, buf.a), as_float(grad_out + i, plane, buf.b),
                       as_float(out + i, plane, buf.c), plane, mean[c], mean_g[c], k[c], scale[c], result);
      store(result, plane, dx + i);
    }
}

#define HPCTRAIN_NORM_ACT_TYPES(T)                                                                                     \
  template void norm_act<T>(const T*, const T*, const Planes&, std::int64_t, std::int64_t, const float*, const float*, \
                            T*);                                                                                       \
  template void norm_act_sums<T>(const T*, const T*, const T*, const Planes&, std::int64_t, std::int64_t,              \
                                 const float*, double*, double*, T*);                                                  \
  template void norm_act_input_grad<T>(const T*, const T*, const T*, const Planes&, std::int64_t, std::int64_t,        \
                                       const float*, const float*, const float*, const float*, T*);
HPCTRAIN_NORM_ACT_TYPES(float)
HPCTRAIN_NORM_ACT_TYPES(Bf16)
#undef HPCTRAIN_NORM_ACT_TYPES

}  // namespace hpctrain::kernels
