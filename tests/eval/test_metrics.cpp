// Training losses: the quantile (pinball) loss and its configuration; catalog metrics of an evaluation.
#include <gtest/gtest.h>

#include "eval/Metrics.hpp"
#include "eval/Scores.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

TEST(QuantileLoss, LevelsFromPercentAndTheMedianAsPointPrediction) {
  TrainConfig t;
  t.loss = "quantile";
  t.quantiles = {10, 50, 90};
  const auto spec = resolve_loss(t, /*classification=*/false);
  ASSERT_EQ(spec.quantiles.size(), 3u);
  EXPECT_DOUBLE_EQ(spec.quantiles[0], 0.1);
  EXPECT_EQ(spec.outputs_per_target(), 3);
  EXPECT_EQ(spec.point_column(), 1);
  t.quantiles = {5, 25};
  EXPECT_EQ(resolve_loss(t, false).point_column(), 1);  // the level nearest 50%
  t.quantiles = {50, 10};
  EXPECT_THROW(resolve_loss(t, false), ConfigError);
  t.quantiles = {10, 50, 90};
  EXPECT_THROW(resolve_loss(t, /*classification=*/true), ConfigError);
  t.loss = "mse";
  EXPECT_EQ(resolve_loss(t, false).outputs_per_target(), 1);
}

TEST(QuantileLoss, PinballValuesPerSample) {
  TrainConfig t;
  t.loss = "quantile";
  t.quantiles = {10, 50, 90};
  const auto spec = resolve_loss(t, false);
  // Target 1.5, predictions 0, 1, 2: errors 1.5, 0.5, -0.5 ->
  // max(0.1*1.5, -0.9*1.5) = 0.15, max(0.25, -0.25) = 0.25, max(-0.45, 0.05) = 0.05.
  const auto outputs = torch::tensor({{0.0f, 1.0f, 2.0f}, {3.0f, 3.0f, 3.0f}});
  const auto targets = torch::tensor({1.5f, 3.0f});
  const auto per_sample = loss_per_sample(spec, outputs, targets);
  EXPECT_NEAR(per_sample[0].item<double>(), (0.15 + 0.25 + 0.05) / 3, 1e-6);
  EXPECT_NEAR(per_sample[1].item<double>(), 0.0, 1e-7);
  EXPECT_NEAR(loss_sum(spec, outputs, targets).item<double>(), 0.15, 1e-6);
}

TEST(QuantileLoss, ItsMinimumIsTheQuantile) {
  // The constant prediction with the least pinball loss over a sample is its quantile.
  TrainConfig t;
  t.loss = "quantile";
  t.quantiles = {20};
  const auto spec = resolve_loss(t, false);
  const auto y = torch::arange(1, 101).to(torch::kFloat);  // 1..100: the 20% quantile is 20
  double best = 0, least = 1e30;
  for (int c = 1; c <= 100; ++c) {
    const double l = loss_sum(spec, torch::full({100, 1}, static_cast<float>(c)), y).item<double>();
    if (l < least) least = l, best = c;
  }
  EXPECT_NEAR(best, 20, 1);
}

TEST(MetricValue, CatalogMetricsOfAnEvaluation) {
  EvalResult c;
  c.num_classes = 3;
  c.loss = 0.7;
  c.accuracy = 0.6;
  c.confusion = {3, 1, 0, 0, 2, 2, 1, 0, 1};  // row = true class
  const ClassificationScores s = classification_scores(c.confusion, 3);
  EXPECT_DOUBLE_EQ(metric_value(c, "loss"), 0.7);
  EXPECT_DOUBLE_EQ(metric_value(c, "accuracy"), 0.6);
  EXPECT_DOUBLE_EQ(metric_value(c, "f1_macro"), s.f1_macro);
  EXPECT_DOUBLE_EQ(metric_value(c, "balanced_accuracy"), s.balanced_accuracy);
  EXPECT_DOUBLE_EQ(metric_value(c, "recall_weighted"), s.recall_weighted);
  EXPECT_THROW(metric_value(c, "rmse"), ConfigError);
  EvalResult r;
  r.mse = 4.0;
  r.mae = 1.5;
  r.r2 = 0.25;
  r.pearson = 0.5;
  EXPECT_DOUBLE_EQ(metric_value(r, "rmse"), 2.0);
  EXPECT_DOUBLE_EQ(metric_value(r, "mae"), 1.5);
  EXPECT_DOUBLE_EQ(metric_value(r, "r2"), 0.25);
  EXPECT_DOUBLE_EQ(metric_value(r, "pearson"), 0.5);
  EXPECT_THROW(metric_value(r, "accuracy"), ConfigError);
  EXPECT_THROW(metric_value(r, "nope"), ConfigError);
}
