#include "models/LossKernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace hpctrain::kernels {

double cross_entropy_forward(const float* logits, const std::int64_t* targets, std::int64_t rows, std::int64_t c,
                             float* lse) {
  double total = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    const float* z = logits + i * c;
    const double m = *std::max_element(z, z + c);
    double sum = 0;
    for (std::int64_t j = 0; j < c; ++j) sum += std::exp(z[j] - m);
    const double l = m + std::log(sum);
    lse[i] = static_cast<float>(l);
    const std::int64_t t = targets[i];
    total += t >= 0 && t < c ? l - z[t] : std::numeric_limits<double>::quiet_NaN();
  }
  return total;
}

void cross_entropy_backward(const float* logits, const std::int64_t* targets, const float* lse, std::int64_t rows,
                            std::int64_t c, float g, float* grad) {
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < c; ++j) {
      const double p = std::exp(static_cast<double>(logits[i * c + j]) - lse[i]);
      grad[i * c + j] = static_cast<float>(g * (p - (j == targets[i] ? 1.0 : 0.0)));
    }
  }
}

}  // namespace hpctrain::kernels
