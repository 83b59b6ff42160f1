#include "train/NonFinite.hpp"

#include <limits>

#include "comm/Communicator.hpp"

namespace hpctrain {

NonFiniteGuard::NonFiniteGuard(const TrainConfig& config, bool active, std::int64_t skipped_before,
                               std::int64_t start_step)
    : active_(active),
      skip_(config.nonfinite == "skip"),
      policy_(config.nonfinite),
      limit_(config.nonfinite_limit),
      skipped_(skipped_before),
      settled_step_(start_step) {}

torch::Tensor NonFiniteGuard::mark_loss(const torch::Tensor& loss) const {
  if (!active_) return loss;
  // 1 or NaN: the value, and the gradients of a finite loss, stay bit for bit the same.
  const auto seed = torch::where(torch::isfinite(loss.detach()), torch::ones_like(loss),
                                 torch::full_like(loss, std::numeric_limits<float>::quiet_NaN()));
  return loss * seed;
}

torch::Tensor NonFiniteGuard::found_in(const std::vector<torch::Tensor>& gradients) const {
  if (!active_ || gradients.empty()) return {};
  // The loss scaler's fused check with a scale of exactly 1: one pass, no value changes.
  const auto options = torch::TensorOptions().dtype(torch::kFloat).device(gradients.front().device());
  auto found = torch::zeros({1}, options);
  at::_amp_foreach_non_finite_check_and_unscale_(gradients, found, torch::ones({1}, options));
  return found;
}

bool NonFiniteGuard::decide(bool nonfinite, std::int64_t step) {
  if (!active_ || !nonfinite) return false;
  apply(1, step, step);
  return true;
}

void NonFiniteGuard::add(const torch::Tensor& flag) {
  if (!active_ || !flag.defined()) return;
  if (!flags_.defined()) flags_ = torch::zeros({1}, flag.options());
  flags_.add_(flag);
}

std::int64_t NonFiniteGuard::settle(std::int64_t step) {
  if (!active_ || !flags_.defined()) return 0;
  const auto count = static_cast<std::int64_t>(flags_.item<float>());
  const std::int64_t first = settled_step_ + 1;
  settled_step_ = step;
  if (count == 0) return 0;
  flags_.zero_();
  apply(count, first, step);
  return count;
}

void NonFiniteGuard::apply(std::int64_t count, std::int64_t first, std::int64_t last) {
  const std::string where = first == last ? "at step " + std::to_string(last)
                                          : "at " + std::to_string(count) + " of the steps " + std::to_string(first) +
                                                " to " + std::to_string(last);
  // Every rank reached the same flags, so every rank throws the same error: rank 0 reports it.
  if (!skip_) {
    throw CollectiveError("train.nonfinite=abort: the loss or the gradients are not finite (NaN or Inf) " + where +
                              "; the step was not applied. Lower optimizer.lr, set train.grad_clip_norm, check "
                              "the data, or set train.nonfinite=skip to skip such steps",
                          0, 1);
  }
  skipped_ += count;
  if (skipped_ > limit_) {
    throw CollectiveError("train.nonfinite=skip: " + std::to_string(skipped_) +
                              " steps skipped for a non-finite loss or gradients, more than train.nonfinite_limit (" +
                              std::to_string(limit_) + "); the latest " + where +
                              ". Lower optimizer.lr, set train.grad_clip_norm or check the data",
                          0, 1);
  }
}

}  // namespace hpctrain
