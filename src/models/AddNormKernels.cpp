#include "models/AddNormKernels.hpp"

#include <cmath>

namespace hpctrain::kernels {

void add_layer_norm_forward(const float* x, const float* r, const float* gamma, const float* beta, std::int64_t rows,
                            std::int64_t d, double eps, float (*round_h)(float), float* h, float* y, float* mean,
                            float* rstd) {
  for (std::int64_t i = 0; i < rows; ++i) {
    const float* xi = x + i * d;
    const float* ri = r + i * d;
    float* hi = h + i * d;
    double sum = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      hi[j] = round_h ? round_h(xi[j] + ri[j]) : xi[j] + ri[j];
      sum += hi[j];
    }
    const double m = sum / static_cast<double>(d);
    double squares = 0;
    for (std::int64_t j = 0; j < d; ++j) squares += (hi[j] - m) * (hi[j] - m);
    const double s = 1.0 / std::sqrt(squares / static_cast<double>(d) + eps);
    float* yi = y + i * d;
    for (std::int64_t j = 0; j < d; ++j) {
      const double v = (hi[j] - m) * s;
      yi[j] = static_cast<float>(gamma ? v * gamma[j] + (beta ? beta[j] : 0.0) : v);
    }
    mean[i] = static_cast<float>(m);
    rstd[i] = static_cast<float>(s);
  }
}

void add_layer_norm_backward(const float* dy, const float* dh_in, const float* h, const float* gamma, const float* mean,
                             const float* rstd, std::int64_t rows, std::int64_t d, float* dh, double* dgamma,
                             double* dbeta) {
  const double n = static_cast<double>(d);
  for (std::int64_t i = 0; i < rows; ++i) {
    const float* dyi = dy + i * d;
    const float* hi = h + i * d;
    const double m = mean[i], s = rstd[i];
    double sum_g = 0, sum_gx = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const double xhat = (hi[j] - m) * s;
      const double g = gamma ? static_cast<double>(dyi[j]) * gamma[j] : dyi[j];
      sum_g += g;
      sum_gx += g * xhat;
      if (dgamma) dgamma[j] += dyi[j] * xhat;
      if (dbeta) dbeta[j] += dyi[j];
    }
    float* dhi = dh + i * d;
    for (std::int64_t j = 0; j < d; ++j) {
      const double xhat = (hi[j] - m) * s;
      const double g = gamma ? static_cast<double>(dyi[j]) * gamma[j] : dyi[j];
      const double v = s * (g - sum_g / n - xhat * sum_gx / n);
      dhi[j] = static_cast<float>(dh_in ? v + dh_in[i * d + j] : v);
    }
  }
}

}  // namespace hpctrain::kernels
