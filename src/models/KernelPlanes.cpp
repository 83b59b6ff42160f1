#include "models/KernelPlanes.hpp"

#include "models/KernelTargets.hpp"

namespace hpctrain::kernels {
namespace {

constexpr int kLanes = 16;

// Sums over one plane run in kLanes float partial sums (a plane is short: a few dozen values
// per lane) and return in double, where the planes of a channel are added up.
HPCTRAIN_CLONES double plane_sum(const float* p, std::int64_t n) {
  float lanes[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += p[i + j];
  double total = 0;
  for (; i < n; ++i) total += p[i];
  for (float v : lanes) total += v;
  return total;
}

HPCTRAIN_CLONES double plane_squares(const float* p, std::int64_t n, float shift) {
  float lanes[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float d = p[i + j] - shift;
      lanes[j] += d * d;
    }
  double total = 0;
  for (; i < n; ++i) {
    const double d = static_cast<double>(p[i]) - shift;
    total += d * d;
  }
  for (float v : lanes) total += v;
  return total;
}

}  // namespace

HPCTRAIN_CLONES void widen(const Bf16* in, std::int64_t n, float* out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_value(in[i]);
}

HPCTRAIN_CLONES void narrow(const float* in, std::int64_t n, Bf16* out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_bits(in[i]);
}

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <typename T>
void channel_moments(const T* x, const Planes& s, std::int64_t c0, std::int64_t c1, double* mean, double* squares) {
  const std::int64_t plane = s.plane();
  const double count = static_cast<double>(s.n * plane);
  auto& buf = scratch();
  for (std::int64_t c = c0; c < c1; ++c) {
    double sum = 0;
    for (std::int64_t n = 0; n < s.n; ++n) sum += plane_sum(as_float(x + (n * s.c + c) * plane, plane, buf.a), plane);
    mean[c] = sum / count;
    double sq = 0;
    const auto shift = static_cast<float>(mean[c]);
    for (std::int64_t n = 0; n < s.n; ++n)
      sq += plane_squares(as_float(x + (n * s.c + c) * plane, plane, buf.a), plane, shift);
    // The float shift is off the mean by at most half an ulp: correct the sum of squares.
    const double off = mean[c] - shift;
    squares[c] = sq - count * off * off;
  }
}

template void channel_moments<float>(const float*, const Planes&, std::int64_t, std::int64_t, double*, double*);
template void channel_moments<Bf16>(const Bf16*, const Planes&, std::int64_t, std::int64_t, double*, double*);

}  // namespace hpctrain::kernels
