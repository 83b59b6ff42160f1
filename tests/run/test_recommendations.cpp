// The recommendation rules (run/Recommendations) on constructed reports: a healthy report
// draws none, and each rule fires on its figure past the threshold and stays silent short of it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include <string>

#include "run/Recommendations.hpp"

using namespace hpctrain;
namespace json = boost::json;

namespace {

// Two CPU ranks on one node, 100 steps of 10 ms, nothing out of the ordinary.
json::value healthy() {
  return json::parse(R"({
    "world": {"size": 2, "nodes": 1, "device": "cpu", "gpu": null, "threads_per_rank": [2, 2], "node_of_rank": [0, 0]},
    "model": {"bucket_mb": 25, "gradient_buckets": 3, "checkpoint_every": 0, "checkpoint_blocks": []},
    "communication": {"overlap": true, "hierarchical": null, "exposed_share_of_step": 0.05},
    "training": {"steps": 100, "checkpoints": 0, "checkpoint_seconds": 0, "total_seconds": 60,
                 "early_loss": {"window_steps": 20, "lines": 4, "max_rise": 1.0, "at_step": 0, "warmup_steps": 0}},
    "time_per_step_ms": {"data": {"mean": 1, "per_rank": [1, 1]}, "forward": {"mean": 4, "per_rank": [4, 4]},
                         "backward": {"mean": 4, "per_rank": [4, 4]},
                         "comm_exposed": {"mean": 0.5, "per_rank": [0.5, 0.5]},
                         "optimizer": {"mean": 0.5, "per_rank": [0.5, 0.5]}, "total_mean": 10},
    "memory": {"peak_rss_bytes": {"max": 2e9, "per_rank": [2e9, 2e9]}, "gpu_peak_allocated_bytes": {"max": 0}},
    "precision": {"mode": "fp32", "loss_scaling": false, "skipped_steps": 0, "final_loss_scale": 1},
    "system": {"load_average_1min": {"per_rank": [1, 1]}, "cpus_online": {"per_rank": [8, 8]},
               "memory_bytes": {"per_rank": [16e9, 16e9]}}
  })");
}

json::value& field(json::value& v, std::initializer_list<const char*> path) {
  json::value* p = &v;
  for (const char* key : path) p = &p->as_object()[key];
  return *p;
}

// The recommendation of `rule`, or null.
json::value rule(const json::value& report, const std::string& name) {
  for (const auto& r : recommendations(report)) {
    if (r.at("rule").as_string() == name) return r;
  }
  return nullptr;
}

std::string text(const json::value& r, const char* field) {
  return std::string(r.at(field).as_string());
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST(Recommendations, HealthyReportDrawsNone) {
  EXPECT_TRUE(recommendations(healthy()).empty());
  EXPECT_EQ(recommendations_text(recommendations(healthy())),
            "recommendations: none, no rule fired on this run's figures (rules and thresholds: docs/outputs.md, "
            "\"Recommendations\")\n");
  EXPECT_TRUE(recommendations(json::object{}).empty());  // an empty report: every rule silent
}

TEST(Recommendations, InputBound) {
  json::value r = healthy();
  field(r, {"time_per_step_ms", "data", "mean"}) = 3.0;
  field(r, {"time_per_step_ms", "total_mean"}) = 12.0;
  const json::value fired = rule(r, "input_bound");
  ASSERT_FALSE(fired.is_null());
  EXPECT_EQ(text(fired, "severity"), "warning");
  EXPECT_TRUE(has(text(fired, "evidence"), "3.00 of 12.00 ms")) << text(fired, "evidence");
  EXPECT_DOUBLE_EQ(fired.at("value").as_double(), 0.25);
  field(r, {"training", "steps"}) = 5;  // too few steps to judge timings
  EXPECT_TRUE(rule(r, "input_bound").is_null());
  field(r, {"training", "steps"}) = 100;
  field(r, {"time_per_step_ms", "data", "mean"}) = 2.0;  // 2/12 = 17%
  EXPECT_TRUE(rule(r, "input_bound").is_null());
}

TEST(Recommendations, CommunicationBound) {
  json::value r = healthy();
  field(r, {"communication", "exposed_share_of_step"}) = 0.3;
  field(r, {"communication", "overlap"}) = false;
  json::value fired = rule(r, "communication_bound");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "suggestion"), "comm.overlap=true"));
  field(r, {"communication", "overlap"}) = true;
  field(r, {"model", "gradient_buckets"}) = 1;
  field(r, {"world", "nodes"}) = 2;
  fired = rule(r, "communication_bound");
  EXPECT_TRUE(has(text(fired, "suggestion"), "lower comm.bucket_mb")) << text(fired, "suggestion");
  EXPECT_TRUE(has(text(fired, "suggestion"), "comm.hierarchical=on"));
  field(r, {"world", "size"}) = 1;  // one rank reduces nothing
  EXPECT_TRUE(rule(r, "communication_bound").is_null());
  field(r, {"world", "size"}) = 2;
  field(r, {"communication", "exposed_share_of_step"}) = 0.1;
  EXPECT_TRUE(rule(r, "communication_bound").is_null());
}

TEST(Recommendations, StragglerRank) {
  json::value r = healthy();
  field(r, {"time_per_step_ms", "forward", "per_rank"}) = json::array{4, 8};  // rank 1: 13.5 ms, median 11.5
  const json::value fired = rule(r, "straggler_rank");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "evidence"), "rank 1 computes 13.50 ms")) << text(fired, "evidence");
  EXPECT_TRUE(has(text(fired, "suggestion"), "node 0"));
  field(r, {"time_per_step_ms", "forward", "per_rank"}) = json::array{4, 5};  // 10.5 / 10 ms
  EXPECT_TRUE(rule(r, "straggler_rank").is_null());
}

TEST(Recommendations, MemoryHeadroomOnGpu) {
  json::value r = healthy();
  field(r, {"world", "device"}) = "cuda";
  field(r, {"world", "gpu"}) = json::object{{"memory_bytes", 80e9}};
  field(r, {"memory", "gpu_peak_allocated_bytes", "max"}) = 75e9;
  json::value fired = rule(r, "memory_headroom");
  ASSERT_FALSE(fired.is_null());
  EXPECT_EQ(text(fired, "severity"), "warning");
  EXPECT_TRUE(has(text(fired, "suggestion"), "train.batch_size"));
  EXPECT_FALSE(has(text(fired, "suggestion"), "parallel.shard"));  // the report says nothing of sharding
  field(r, {"parallel"}) = json::object{{"shard", json::object{{"stage", "none"}}}};
  fired = rule(r, "memory_headroom");
  EXPECT_TRUE(has(text(fired, "suggestion"), "parallel.shard=optimizer")) << text(fired, "suggestion");
  field(r, {"memory", "gpu_peak_allocated_bytes", "max"}) = 20e9;
  fired = rule(r, "memory_headroom");
  ASSERT_FALSE(fired.is_null());
  EXPECT_EQ(text(fired, "severity"), "info");
  EXPECT_TRUE(has(text(fired, "suggestion"), "larger train.batch_size"));
  field(r, {"memory", "gpu_peak_allocated_bytes", "max"}) = 50e9;
  EXPECT_TRUE(rule(r, "memory_headroom").is_null());
}

TEST(Recommendations, MemoryHeadroomOnHost) {
  json::value r = healthy();  // 4 of 16 GB, but no recomputation to turn off: silent
  EXPECT_TRUE(rule(r, "memory_headroom").is_null());
  field(r, {"model", "checkpoint_every"}) = 1;
  json::value fired = rule(r, "memory_headroom");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "suggestion"), "model.checkpoint_every=0"));
  field(r, {"memory", "peak_rss_bytes", "per_rank"}) = json::array{7.5e9, 7.5e9};  // 15 of 16 GB on the node
  fired = rule(r, "memory_headroom");
  ASSERT_FALSE(fired.is_null());
  EXPECT_EQ(text(fired, "severity"), "warning");
  field(r, {"world", "node_of_rank"}) = json::array{0, 1};  // on two nodes: 7.5 of 16 GB each
  field(r, {"model", "checkpoint_every"}) = 0;
  EXPECT_TRUE(rule(r, "memory_headroom").is_null());
}

TEST(Recommendations, ThreadsPerCore) {
  json::value r = healthy();
  field(r, {"world", "threads_per_rank"}) = json::array{8, 8};
  const json::value fired = rule(r, "threads_per_core");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "suggestion"), "run.threads=4")) << text(fired, "suggestion");
  field(r, {"world", "threads_per_rank"}) = json::array{4, 4};
  EXPECT_TRUE(rule(r, "threads_per_core").is_null());
  // One thread per rank already, 4 ranks on 2 CPUs: fewer ranks is the only change.
  field(r, {"world", "threads_per_rank"}) = json::array{1, 1, 1, 1};
  field(r, {"world", "node_of_rank"}) = json::array{0, 0, 0, 0};
  field(r, {"system", "cpus_online", "per_rank"}) = json::array{2, 2, 2, 2};
  const json::value fewer = rule(r, "threads_per_core");
  ASSERT_FALSE(fewer.is_null());
  EXPECT_TRUE(has(text(fewer, "suggestion"), "start at most 2 ranks per node")) << text(fewer, "suggestion");
}

TEST(Recommendations, CheckpointCost) {
  json::value r = healthy();
  field(r, {"training", "checkpoints"}) = 5;
  field(r, {"training", "checkpoint_seconds"}) = 6.0;
  const json::value fired = rule(r, "checkpoint_cost");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "suggestion"), "checkpoint.every_steps"));
  field(r, {"training", "checkpoint_seconds"}) = 1.0;
  EXPECT_TRUE(rule(r, "checkpoint_cost").is_null());
}

TEST(Recommendations, LowGpuUtilization) {
  json::value r = healthy();
  EXPECT_TRUE(rule(r, "low_gpu_utilization").is_null());  // no monitor samples: no opinion
  field(r, {"system", "monitor"}) = json::object{{"gpu_utilization", json::object{{"mean", 0.3}}}};
  EXPECT_FALSE(rule(r, "low_gpu_utilization").is_null());
  field(r, {"system", "monitor", "gpu_utilization", "mean"}) = 0.9;
  EXPECT_TRUE(rule(r, "low_gpu_utilization").is_null());
}

TEST(Recommendations, LossScaleThrash) {
  json::value r = healthy();
  field(r, {"precision", "skipped_steps"}) = 10;
  EXPECT_TRUE(rule(r, "loss_scale_thrash").is_null());  // no loss scaling: not fp16's scaler
  field(r, {"precision", "loss_scaling"}) = true;
  const json::value fired = rule(r, "loss_scale_thrash");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "suggestion"), "precision.growth_interval"));
  field(r, {"precision", "skipped_steps"}) = 1;
  EXPECT_TRUE(rule(r, "loss_scale_thrash").is_null());
}

TEST(Recommendations, WarmupTooShort) {
  json::value r = healthy();
  field(r, {"training", "early_loss", "max_rise"}) = 2.5;
  field(r, {"training", "early_loss", "at_step"}) = 10;
  const json::value fired = rule(r, "warmup_too_short");
  ASSERT_FALSE(fired.is_null());
  EXPECT_TRUE(has(text(fired, "suggestion"), "schedule.warmup_steps=20")) << text(fired, "suggestion");
  field(r, {"training", "early_loss", "warmup_steps"}) = 100;  // the jump came early in a long warmup
  EXPECT_TRUE(rule(r, "warmup_too_short").is_null());
  field(r, {"training", "early_loss", "warmup_steps"}) = 0;
  field(r, {"training", "early_loss", "max_rise"}) = 1.2;
  EXPECT_TRUE(rule(r, "warmup_too_short").is_null());
}

TEST(Recommendations, EarlyLossFigure) {
  // Window: the first fifth of 100 steps; the jump at step 50 lies outside it.
  const json::object f = early_loss_figure({{1, 2.0}, {2, 1.0}, {3, 2.5}, {50, 5.0}}, 100, 7);
  EXPECT_EQ(f.at("window_steps").as_int64(), 20);
  EXPECT_EQ(f.at("lines").as_int64(), 3);
  EXPECT_DOUBLE_EQ(f.at("max_rise").as_double(), 2.5);
  EXPECT_EQ(f.at("at_step").as_int64(), 3);
  EXPECT_EQ(f.at("warmup_steps").as_int64(), 7);
  const json::object steady = early_loss_figure({{1, 2.0}, {2, 1.5}, {3, 1.0}}, 10, 0);
  EXPECT_DOUBLE_EQ(steady.at("max_rise").as_double(), 1.0);
}

TEST(Recommendations, EarlyLossFromLog) {
  char path[] = "/tmp/hpctrain_early_loss_XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text =
      "{\"type\":\"step\",\"step\":2,\"loss\":2.0}\n{\"type\":\"system\",\"after_step\":2}\n"
      "{\"type\":\"step\",\"step\":4,\"loss\":null,\"skipped\":true}\nnot json\n"
      "{\"type\":\"step\",\"step\":6,\"loss\":5.0}\n";
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  const json::object f = early_loss_from_log(path, 100, 3);
  ::unlink(path);
  EXPECT_EQ(f.at("lines").as_int64(), 2);  // the null loss, the system line and the bad line left out
  EXPECT_DOUBLE_EQ(f.at("max_rise").as_double(), 2.5);
  EXPECT_EQ(f.at("at_step").as_int64(), 6);
  EXPECT_EQ(early_loss_from_log("/nonexistent/metrics.jsonl", 100, 0).at("lines").as_int64(), 0);
}

TEST(Recommendations, ConsoleText) {
  json::value r = healthy();
  field(r, {"world", "threads_per_rank"}) = json::array{8, 8};
  const std::string t = recommendations_text(recommendations(r));
  EXPECT_TRUE(has(t, "[warning] threads_per_core: node 0 runs 2 ranks")) << t;
}
