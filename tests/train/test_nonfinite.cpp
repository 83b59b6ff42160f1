// train.nonfinite's decisions (train/NonFinite): the NaN backward seed of a non-finite loss,
// the fused check of the gradients, abort and skip with their limit, and the device count
// applied at a settle. One process; the 2-rank and pipeline behaviour is tests/faults/test_nonfinite.py.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "comm/Communicator.hpp"
#include "train/NonFinite.hpp"

namespace hpctrain {
namespace {

TrainConfig policy(const std::string& nonfinite, std::int64_t limit) {
  TrainConfig c;
  c.nonfinite = nonfinite;
  c.nonfinite_limit = limit;
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CollectiveError& e) {
    EXPECT_EQ(e.exit_code(), 1);
    return e.what();
  }
  return "";
}

TEST(NonFinite, FiniteLossKeepsItsGradientBitForBit) {
  const NonFiniteGuard guard(policy("abort", 10), true, 0, 0);
  auto w = torch::tensor({0.3F, -1.7F}, torch::requires_grad());
  guard.mark_loss((w * w).sum() / 3).backward();
  auto v = torch::tensor({0.3F, -1.7F}, torch::requires_grad());
  ((v * v).sum() / 3).backward();
  EXPECT_TRUE(torch::equal(w.grad(), v.grad()));
}

TEST(NonFinite, NonFiniteLossTurnsEveryGradientNaN) {
  const NonFiniteGuard guard(policy("abort", 10), true, 0, 0);
  // The loss is infinite while its gradient alone would be finite (2 * w).
  auto w = torch::tensor({3e30F, 1.0F}, torch::requires_grad());
  auto loss = (w * w).sum();
  ASSERT_TRUE(std::isinf(loss.item<float>()));
  guard.mark_loss(loss).backward();
  EXPECT_TRUE(w.grad().isnan().all().item<bool>());
  EXPECT_EQ(guard.found_in({w.grad()}).item<float>(), 1.0F);
}

TEST(NonFinite, FoundInFlagsInfAndNaNButNotLargeValues) {
  const NonFiniteGuard guard(policy("abort", 10), true, 0, 0);
  const auto big = torch::full({4}, 3e38F);
  EXPECT_EQ(guard.found_in({big, torch::zeros({3})}).item<float>(), 0.0F);
  EXPECT_EQ(guard.found_in({big, torch::tensor({1.0F, std::numeric_limits<float>::infinity()})}).item<float>(), 1.0F);
  EXPECT_EQ(guard.found_in({torch::tensor({std::numeric_limits<float>::quiet_NaN()})}).item<float>(), 1.0F);
  EXPECT_TRUE(torch::equal(big, torch::full({4}, 3e38F)));  // checked, not changed
}

TEST(NonFinite, InactiveUnderFp16) {
  NonFiniteGuard guard(policy("abort", 0), false, 0, 0);
  const auto loss = torch::tensor(std::numeric_limits<float>::infinity());
  EXPECT_TRUE(torch::equal(guard.mark_loss(loss), loss));
  EXPECT_FALSE(guard.found_in({loss}).defined());
  EXPECT_FALSE(guard.decide(true, 3));  // the loss scaler decides
}

TEST(NonFinite, AbortNamesTheStep) {
  NonFiniteGuard guard(policy("abort", 10), true, 0, 0);
  EXPECT_FALSE(guard.decide(false, 6));
  const std::string message = error_of([&] { guard.decide(true, 7); });
  EXPECT_NE(message.find("train.nonfinite=abort"), std::string::npos) << message;
  EXPECT_NE(message.find("at step 7;"), std::string::npos) << message;
}

TEST(NonFinite, SkipCountsUpToTheLimitAcrossResumes) {
  NonFiniteGuard guard(policy("skip", 3), true, /*skipped_before=*/2, 100);
  EXPECT_TRUE(guard.decide(true, 101));
  EXPECT_EQ(guard.skipped_steps(), 3);
  const std::string message = error_of([&] { guard.decide(true, 150); });
  EXPECT_NE(message.find("4 steps skipped"), std::string::npos) << message;
  EXPECT_NE(message.find("more than train.nonfinite_limit (3)"), std::string::npos) << message;
  EXPECT_NE(message.find("at step 150"), std::string::npos) << message;
}

TEST(NonFinite, DeviceFlagsAreAppliedAtSettle) {
  NonFiniteGuard skip(policy("skip", 10), true, 0, 20);
  for (float flag : {0.0F, 1.0F, 1.0F, 0.0F}) skip.add(torch::full({1}, flag));
  EXPECT_EQ(skip.settle(24), 2);
  EXPECT_EQ(skip.skipped_steps(), 2);
  EXPECT_EQ(skip.settle(25), 0);  // the count starts again

  NonFiniteGuard abort(policy("abort", 10), true, 0, 20);
  abort.add(torch::full({1}, 0.0F));
  abort.add(torch::full({1}, 1.0F));
  const std::string message = error_of([&] { abort.settle(22); });
  EXPECT_NE(message.find("at 1 of the steps 21 to 22"), std::string::npos) << message;
}

}  // namespace
}  // namespace hpctrain
