#include "train/Milestones.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "checkpoint/Checkpoint.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// The metric of `m` as lower-is-better.
double lower_better(const SplitMetric& m, double value) {
  return lower_is_better(m.name) ? value : -value;
}

void check_task(const SplitMetric& m, bool classification, const std::string& key) {
  const MetricInfo& info = metric_info(m.name);
  if ((info.task == MetricTask::Classification && !classification) ||
      (info.task == MetricTask::Regression && classification)) {
    throw ConfigError(key + ": " + m.key() + " is not a metric of " +
                      (classification ? "classification" : "regression") + " data");
  }
}

bool basic(const SplitMetric& m) {
  return m.name == "loss" || m.name == "accuracy";
}

}  // namespace

Milestones::Milestones(const Config& config, bool classification)
    : early_metric_(config.train.early_stop_metric),
      patience_(config.train.early_stop_patience),
      min_delta_(config.train.early_stop_min_delta),
      restore_(config.train.early_stop_restore_best && config.train.early_stop_patience > 0) {
  const bool validation = config.data.val_fraction > 0 || config.cv.folds > 0;
  if (config.checkpoint.keep_best != "none") {
    keep_best_ = parse_split_metric(config.checkpoint.keep_best, "checkpoint.keep_best");
    check_task(*keep_best_, classification, "checkpoint.keep_best");
    if (keep_best_->split != "val") {
      throw ConfigError("checkpoint.keep_best: " + keep_best_->key() +
                        ": the best model is chosen on validation metrics (val_...), never on the test split");
    }
    if (!validation) throw ConfigError("checkpoint.keep_best: needs a validation split (data.val_fraction > 0)");
    if (!basic(*keep_best_)) watched_.push_back(keep_best_->key());
  }
  if (!config.train.target.empty()) {
    target_ = parse_metric_target(config.train.target, "train.target");
    check_task(target_->metric, classification, "train.target");
    if (target_->metric.split == "test" && !config.train.test_every_epoch) {
      throw ConfigError("train.target: " + target_->metric.key() + " needs train.test_every_epoch=true");
    }
    if (target_->metric.split == "val" && !validation) {
      throw ConfigError("train.target: " + target_->metric.key() + " needs a validation split (data.val_fraction > 0)");
    }
    const std::string key = target_->metric.key();
    if (!basic(target_->metric) && std::find(watched_.begin(), watched_.end(), key) == watched_.end()) {
      watched_.push_back(key);
    }
  }
}

void Milestones::resumed(const std::vector<EpochRecord>& past, const std::string& best_file) {
  if (restore_ && keep_best_ && keep_best_->key() == early_metric_ && !past.empty()) best_file_ = best_file;
  for (const auto& e : past) {
    if (!keep_best_) break;
    const double v = value_of(e, keep_best_->key());
    if (std::isfinite(v)) best_kept_ = std::min(best_kept_, lower_better(*keep_best_, v));
  }
}

void Milestones::record_metrics(EpochRecord& record, const EvalResult* validation, const EvalResult* test) const {
  for (const auto& key : watched_) {
    const SplitMetric m = parse_split_metric(key, key);
    const EvalResult* r = m.split == "val" ? validation : test;
    if (r) record.watched.emplace_back(key, metric_value(*r, m.name));
  }
}

double Milestones::value_of(const EpochRecord& e, const std::string& key) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (key == "val_loss") return e.has_validation ? e.val_loss : nan;
  if (key == "val_accuracy") return e.has_validation && e.classification ? e.val_accuracy : nan;
  if (key == "test_loss") return e.has_test ? e.test_loss : nan;
  if (key == "test_accuracy") return e.has_test && e.classification ? e.test_accuracy : nan;
  for (const auto& [name, value] : e.watched) {
    if (name == key) return value;
  }
  return nan;
}

EpochVerdict Milestones::after_epoch(const EpochRecord& rec, double& best, std::int64_t& epochs_without_improvement,
                                     torch::nn::Module& model) {
  EpochVerdict v;
  if (keep_best_) {
    const double value = value_of(rec, keep_best_->key());
    if (std::isfinite(value) && lower_better(*keep_best_, value) < best_kept_) {
      best_kept_ = lower_better(*keep_best_, value);
      v.new_best = true;
    }
  }
  if (target_) {
    const double value = value_of(rec, target_->metric.key());
    if (std::isfinite(value) && target_->reached(value)) {
      v.target_reached = true;
      v.target_value = value;
      v.stop = true;
      v.reason = "target";
    }
  }
  // Early stopping (train.early_stop_*): the metric has not improved for `patience` epochs.
  if (patience_ <= 0 || !rec.has_validation) return v;
  const std::string name = early_metric_.substr(std::string("val_").size());
  const double metric = lower_is_better(name) ? value_of(rec, early_metric_) : -value_of(rec, early_metric_);
  if (metric < best - min_delta_) {
    best = metric;
    epochs_without_improvement = 0;
    if (restore_) {
      torch::NoGradGuard no_grad;
      best_weights_.clear();
      for (const auto& p : model.parameters()) best_weights_.push_back(p.detach().clone());
      for (const auto& b : model.buffers()) best_weights_.push_back(b.detach().clone());
      best_epoch_ = rec.epoch;
    }
  } else if (++epochs_without_improvement >= patience_ && !v.stop) {
    v.stop = true;
    v.reason = "early_stopping";
  }
  return v;
}

std::int64_t Milestones::restore_best(torch::nn::Module& model) {
  if (!restore_) return -1;
  torch::NoGradGuard no_grad;
  if (best_weights_.empty()) {
    if (best_file_.empty() || access(best_file_.c_str(), F_OK) != 0) return -1;
    const CheckpointInfo info = verify_checkpoint(best_file_);
    std::map<std::string, torch::Tensor> stored;
    for (auto& [name, tensor] : checkpoint_state_dict(info)) stored[name] = tensor;
    for (auto& item : model.named_parameters()) item.value().copy_(stored.at(item.key()));
    for (auto& item : model.named_buffers()) item.value().copy_(stored.at(item.key()));
    return info.position.epoch - 1;
  }
  std::size_t i = 0;
  for (auto& p : model.parameters()) p.copy_(best_weights_.at(i++));
  for (auto& b : model.buffers()) b.copy_(best_weights_.at(i++));
  return best_epoch_;
}

}  // namespace hpctrain
