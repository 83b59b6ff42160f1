#include "train/Trainer.hpp"

#include <cmath>
#include <limits>

#include "comm/GradientBuckets.hpp"
#include "data/Sampling.hpp"
#include "models/Model.hpp"
#include "report/Progress.hpp"
#include "train/Optimizers.hpp"
#include "train/Schedule.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace json = boost::json;

Trainer::Trainer(const Config& config, const Communicator& comm, const ImageData& data, MetricsLog& log)
    : config_(config), comm_(comm), data_(data), log_(log) {
  const TrainConfig& tc = config_.train;
  if (tc.batch_size < comm_.size()) {
    throw ConfigError("train.batch_size: the global batch (" + std::to_string(tc.batch_size) +
                      ") must hold at least one sample per rank (" + std::to_string(comm_.size()) + " ranks)");
  }
  per_epoch_ = steps_per_epoch(data_.train_count(), tc.batch_size);
  if (per_epoch_ < 1) {
    throw ConfigError("train.batch_size: the global batch (" + std::to_string(tc.batch_size) +
                      ") is larger than the training split (" + std::to_string(data_.train_count()) + " samples)");
  }
  total_steps_ = per_epoch_ * tc.epochs;
  if (tc.max_steps > 0) total_steps_ = std::min(total_steps_, tc.max_steps);

  torch::manual_seed(stream_seed(static_cast<std::uint64_t>(tc.seed), Stream::Model));
  model_ = build_model(config_.model, InputSpec{data_.meta().sample_shape, data_.meta().num_classes});
  buckets_ = std::make_unique<GradientBuckets>(model_->parameters(), config_.comm.bucket_mb);
  optimizer_ = make_optimizer(config_.optimizer, model_->parameters());
  schedule_ = std::make_unique<LrSchedule>(config_.schedule, config_.optimizer.lr, total_steps_, per_epoch_);
}

Trainer::~Trainer() = default;

TrainResult Trainer::run() {
  const TrainConfig& tc = config_.train;
  const bool root = comm_.rank() == 0;
  const auto seed = static_cast<std::uint64_t>(tc.seed);
  const std::int64_t global_batch = tc.batch_size;
  const std::int64_t per_epoch = per_epoch_, total_steps = total_steps_;
  ModelImpl* model = model_.get();
  GradientBuckets& buckets = *buckets_;
  auto& optimizer = optimizer_;
  const LrSchedule& schedule = *schedule_;
  // Same initial parameters everywhere: rank 0's, broadcast.
  broadcast_module_state(*model, comm_, 0);
  // Dropout draws differ per rank, reproducibly.
  torch::manual_seed(stream_seed(seed, Stream::Model, static_cast<std::uint64_t>(comm_.rank()) + 1));
  model->train();

  TrainResult result;
  result.parameters = parameter_count(*model);
  result.buckets = buckets.bucket_count();
  const Range slice = batch_slice(global_batch, comm_.size(), comm_.rank());
  const double inv_batch = 1.0 / static_cast<double>(global_batch);
  auto forward = [&](torch::Tensor x) { return model->forward(x); };
  auto to_input = [&](const torch::Tensor& x) { return data_.to_input(x); };

  Progress progress(config_.run.progress, root, total_steps, config_.run.log_every);
  const double start = wall_seconds();
  PhaseTimer& timer = result.timer;
  std::int64_t step = 0;
  double best = std::numeric_limits<double>::infinity();
  std::int64_t epochs_without_improvement = 0;
  result.stop_reason = "completed";

  for (std::int64_t epoch = 0; epoch < tc.epochs && step < total_steps; ++epoch) {
    const double epoch_start = wall_seconds();
    timer.restart();
    const LabeledImages epoch_data = data_.epoch(epoch, global_batch, comm_);
    timer.mark(Phase::Data);
    double loss_sum = 0;  // local sum of per-sample losses
    std::int64_t correct = 0, seen = 0, epoch_steps = 0;
    double lr = 0;
    for (std::int64_t s = 0; s < per_epoch && step < total_steps; ++s) {
      auto x = data_.to_input(epoch_data.images.narrow(0, s * slice.size(), slice.size()));
      auto y = epoch_data.labels.narrow(0, s * slice.size(), slice.size());
      lr = schedule.at(step);
      set_learning_rate(*optimizer, lr);
      buckets.zero();
      timer.mark(Phase::Data);

      auto logits = model->forward(x);
      // Sum over local samples / global batch: the allreduced sum is the global mean.
      auto loss = torch::nn::functional::cross_entropy(
                      logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) *
                  inv_batch;
      timer.mark(Phase::Forward);
      loss.backward();
      timer.mark(Phase::Backward);
      buckets.allreduce_sum(comm_);
      timer.mark(Phase::Allreduce);
      if (tc.grad_clip_norm > 0) {
        const double norm = buckets.global_norm();
        if (norm > tc.grad_clip_norm) buckets.scale(tc.grad_clip_norm / (norm + 1e-6));
      }
      optimizer->step();
      timer.mark(Phase::Optimizer);

      const double local_loss = loss.item<double>() * static_cast<double>(global_batch);
      loss_sum += local_loss;
      correct += logits.argmax(1).eq(y).sum().item<std::int64_t>();
      seen += slice.size();
      ++step;
      ++epoch_steps;
      timer.mark(Phase::Data);  // bookkeeping is charged to data

      const bool log_step = step % config_.run.log_every == 0 || step == total_steps;
      if (log_step) {
        double global_loss = local_loss;
        comm_.allreduce_sum(&global_loss, 1);
        global_loss *= inv_batch;
        const double elapsed = wall_seconds() - epoch_start;
        const double rate = static_cast<double>(epoch_steps * global_batch) / std::max(elapsed, 1e-9);
        if (root) {
          log_.write(json::object{{"type", "step"}, {"step", step}, {"epoch", epoch}, {"loss", global_loss},
                                  {"lr", lr}, {"samples_per_s", rate}, {"elapsed_s", wall_seconds() - start}});
        }
        progress.step(step, epoch, global_loss, rate);
        timer.mark(Phase::Data);
      }
    }
    EpochRecord rec;
    rec.epoch = epoch;
    rec.lr = lr;
    rec.seconds = wall_seconds() - epoch_start;
    std::vector<double> sums{loss_sum, static_cast<double>(correct), static_cast<double>(seen)};
    comm_.allreduce_sum(sums.data(), sums.size());
    rec.train_loss = sums[0] / std::max(1.0, sums[2]);
    rec.train_accuracy = sums[1] / std::max(1.0, sums[2]);
    rec.samples_per_s = sums[2] / std::max(rec.seconds, 1e-9);
    result.samples += static_cast<std::int64_t>(sums[2]);
    result.train_seconds += rec.seconds;
    timer.restart();
    if (data_.split().validation.size() > 0) {
      const auto val = evaluate(*model, forward, data_.validation().images, data_.validation().labels, to_input,
                                tc.eval_batch_size, data_.meta().num_classes, comm_);
      rec.val_loss = val.loss;
      rec.val_accuracy = val.accuracy;
      rec.has_validation = true;
    }
    timer.mark(Phase::Eval);
    result.epochs.push_back(rec);
    if (root) {
      json::object line{{"type", "epoch"},          {"epoch", epoch},
                        {"train_loss", rec.train_loss}, {"train_accuracy", rec.train_accuracy},
                        {"lr", rec.lr},             {"seconds", rec.seconds},
                        {"samples_per_s", rec.samples_per_s}};
      if (rec.has_validation) {
        line["val_loss"] = rec.val_loss;
        line["val_accuracy"] = rec.val_accuracy;
      }
      log_.write(line);
      char text[256];
      std::snprintf(text, sizeof(text),
                    "epoch %lld: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f samples/s | %.1f s",
                    static_cast<long long>(epoch), rec.train_loss, rec.train_accuracy, rec.val_loss, rec.val_accuracy,
                    rec.samples_per_s, rec.seconds);
      progress.message(text);
    }
    if (tc.early_stop_patience > 0 && rec.has_validation) {
      // Lower is better: negate accuracy.
      const double metric = tc.early_stop_metric == "val_accuracy" ? -rec.val_accuracy : rec.val_loss;
      if (metric < best - tc.early_stop_min_delta) {
        best = metric;
        epochs_without_improvement = 0;
      } else if (++epochs_without_improvement >= tc.early_stop_patience) {
        result.stop_reason = "early_stopping";
        break;
      }
    }
  }
  if (result.stop_reason == "completed" && step < per_epoch * tc.epochs) result.stop_reason = "max_steps";
  result.steps = step;
  progress.finish();

  if (tc.test_at_end) {
    timer.restart();
    result.test = evaluate(*model, forward, data_.test().images, data_.test().labels, to_input, tc.eval_batch_size,
                           data_.meta().num_classes, comm_);
    result.has_test = true;
    timer.mark(Phase::Eval);
    if (root) {
      log_.write(json::object{{"type", "test"}, {"loss", result.test.loss}, {"accuracy", result.test.accuracy},
                              {"samples", result.test.count}});
    }
  }
  result.total_seconds = wall_seconds() - start;
  return result;
}

}  // namespace hpctrain
