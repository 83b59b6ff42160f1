#include "train/Trainer.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "comm/GradientReducer.hpp"
#include "data/BatchPipeline.hpp"
#include "data/Sampling.hpp"
#include "launch/Mpi.hpp"
#include "launch/Signals.hpp"
#include "models/Model.hpp"
#include "train/Progress.hpp"
#include "train/Device.hpp"
#include "train/Optimizers.hpp"
#include "train/Profiler.hpp"
#include "train/Schedule.hpp"
#include "train/StepGraph.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;

boost::json::object to_json(const EpochRecord& e) {
  json::object o{{"epoch", e.epoch}, {"train_loss", e.train_loss}};
  if (e.classification) o["train_accuracy"] = e.train_accuracy;
  for (const auto& kv : json::object{{"lr", e.lr},
                                     {"seconds", e.seconds},
                                     {"samples_per_s", e.samples_per_s},
                                     {"train_seconds_total", e.train_seconds_total}}) {
    o[kv.key()] = kv.value();
  }
  if (e.has_validation) {
    o["val_loss"] = e.val_loss;
    if (e.classification) o["val_accuracy"] = e.val_accuracy;
  }
  if (e.has_test) {
    o["test_loss"] = e.test_loss;
    if (e.classification) o["test_accuracy"] = e.test_accuracy;
  }
  return o;
}

EpochRecord epoch_record_from_json(const boost::json::object& o) {
  auto num = [&](const char* key) { return o.contains(key) ? o.at(key).to_number<double>() : 0.0; };
  EpochRecord e;
  e.epoch = o.at("epoch").as_int64();
  e.classification = o.contains("train_accuracy");
  e.train_loss = num("train_loss");
  e.train_accuracy = num("train_accuracy");
  e.has_validation = o.contains("val_loss");
  e.val_loss = num("val_loss");
  e.val_accuracy = num("val_accuracy");
  e.has_test = o.contains("test_loss");
  e.test_loss = num("test_loss");
  e.test_accuracy = num("test_accuracy");
  e.lr = num("lr");
  e.seconds = num("seconds");
  e.samples_per_s = num("samples_per_s");
  e.train_seconds_total = num("train_seconds_total");
  return e;
}

Trainer::Trainer(const Config& config, const Communicator& comm, const ShardedDataset& data, MetricsLog& log)
    : config_(config),
      comm_(comm),
      data_(data),
      log_(log),
      device_(compute_device().device),
      scaler_(config.precision) {
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

  loss_ = resolve_loss(tc, data_.classification());
  if (!data_.classification() && tc.early_stop_patience > 0 && tc.early_stop_metric == "val_accuracy") {
    throw ConfigError("train.early_stop_metric: val_accuracy needs classification data; use val_loss");
  }
  torch::manual_seed(stream_seed(static_cast<std::uint64_t>(tc.seed), Stream::Model));
  // Synchronized batch norm sums its statistics over this run's ranks, in order with the
  // gradient buckets (the reducer exists before the first training forward).
  GroupSum group;
  if (comm_.size() > 1) {
    group = [this](torch::Tensor& values) {
      if (reducer_) {
        reducer_->sum_in_order(values);
        return;
      }
      auto host = values.to(torch::kCPU).contiguous();  // float64
      comm_.allreduce_sum(host.data_ptr<double>(), static_cast<std::size_t>(host.numel()));
      values.copy_(host);
    };
  }
  model_ = build_model(config_.model, InputSpec{data_.meta().sample_shape, output_size()}, group);
  model_->to(device_);
  if (config_.model.channels_last) to_channels_last(*model_);
  // Overlap needs a second thread calling MPI (never at the same time as the main one).
  const bool overlap = config_.comm.overlap && MpiRuntime::thread_level() >= MPI_THREAD_SERIALIZED;
  // NCCL for GPU parameters when compiled in (auto), else MPI (GPU buckets staged through host memory).
  if (config_.comm.backend == "nccl" && !device_.is_cuda()) {
    throw ConfigError(
        "comm.backend=nccl: NCCL reduces GPU tensors, and this run computes on the CPU "
        "(device.type); use comm.backend=mpi or auto");
  }
  // NCCL refuses two ranks of one communicator on the same GPU: auto takes MPI then.
  backend_ = config_.comm.backend == "nccl" || (config_.comm.backend == "auto" && device_.is_cuda() &&
                                                HPCTRAIN_WITH_NCCL && !compute_device().shared)
                 ? "nccl"
                 : "mpi";
  // The NCCL communicator is made at the start of run(), after every rank has built its
  // model: a rank failing here must not leave the others inside NCCL's setup broadcast.
  if (backend_ == "mpi" || comm_.size() == 1) {
    reducer_ = std::make_unique<GradientReducer>(model_->parameters(), config_.comm.bucket_mb, comm_, overlap,
                                                 /*nccl=*/nullptr, /*alone_without_buckets=*/true);
  }
  overlap_ = overlap;
  optimizer_ = make_optimizer(config_.optimizer, model_->parameters(), use_fused_optimizer(config_.optimizer, device_));
  device_side_ = is_fused(*optimizer_);
  if (device_side_) scaler_.keep_on_device(device_);
  graphs_ = config_.device.cuda_graphs && device_.is_cuda();
  if (graphs_) {
    if (comm_.size() > 1) {
      throw ConfigError("device.cuda_graphs: a captured step runs on one rank per training run (this run has " +
                        std::to_string(comm_.size()) + "); the gradient reduction is not captured");
    }
    if (!device_side_) {
      throw ConfigError(
          "device.cuda_graphs: the captured step needs the fused optimizer, which steps without waiting for the "
          "GPU: use optimizer.name adam or adamw with optimizer.fused auto or on");
    }
    if (config_.model.checkpoint_every > 0) {
      throw ConfigError(
          "device.cuda_graphs: gradient checkpointing (model.checkpoint_every) restores random-number state "
          "on the host during backward, which a graph cannot replay; set one of them off");
    }
    // Replays never zero the gradients: that is right only when autograd hands over fresh
    // buffers from the graph's pool each step (one rank: no buckets to accumulate into).
    if (!reducer_ || reducer_->bucket_count() != 0) {
      throw std::logic_error("device.cuda_graphs: a captured step needs the reducer without buckets");
    }
    read_learning_rate_from_device(*optimizer_);
  }
  schedule_ = std::make_unique<LrSchedule>(config_.schedule, config_.optimizer.lr, total_steps_, per_epoch_);
}

Trainer::~Trainer() = default;

EvalResult Trainer::evaluate_split(const Samples& split) {
  // Batch-norm statistics differ per rank after training: evaluate the averaged model.
  average_module_buffers(*model_, comm_);
  return evaluate(
      *model_, [&](torch::Tensor x) { return forward_to_cpu(x); }, split, data_, loss_, config_.train.eval_batch_size,
      comm_, step_callback_);
}

torch::Tensor Trainer::forward_to_cpu(const torch::Tensor& input) {
  auto x = input.to(device_, /*non_blocking=*/true);
  if (config_.model.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  AutocastScope autocast(config_.precision.mode, device_.type());
  return model_->forward(x).to(torch::kCPU, torch::kFloat);
}

std::string Trainer::model_description() const {
  const DatasetMeta& m = data_.meta();
  auto strings = [](const std::vector<std::string>& v) {
    json::array a;
    for (const auto& x : v) a.push_back(json::string(x));
    return a;
  };
  auto numbers = [](const auto& v) {
    json::array a;
    for (auto x : v) a.push_back(x);
    return a;
  };
  return compact_json(
      json::object{{"model", json::parse(resolved_json_).as_object().at("model")},
                   {"task", task_name(m.task)},
                   {"input_dtype", m.float_inputs() ? "float32" : "uint8"},
                   {"sample_shape", numbers(m.sample_shape)},
                   {"outputs", output_size()},
                   {"class_names", strings(m.class_names)},
                   {"feature_names", strings(m.feature_names)},
                   {"normalization", json::object{{"mean", numbers(data_.mean())}, {"std", numbers(data_.stddev())}}},
                   {"target", json::object{{"mean", data_.target_mean()}, {"std", data_.target_std()}}},
                   {"loss", loss_name(loss_.kind)},
                   {"quantiles", numbers(loss_.quantiles)},
                   {"parameters", parameter_count(*model_)}});
}

LocalPredictions Trainer::predict_held_out() {
  average_module_buffers(*model_, comm_);
  return predict(
      *model_, [&](torch::Tensor x) { return forward_to_cpu(x); }, data_.validation(), data_, loss_,
      config_.train.eval_batch_size, step_callback_);
}

void add_forecast_figures(json::object& out, const EvalResult& result, const std::string& prefix) {
  auto array = [](const std::vector<double>& values) {
    json::array a;
    for (double v : values) a.push_back(v);
    return a;
  };
  if (!result.quantile_coverage.empty()) {
    out[prefix + "quantile_loss"] = result.quantile_loss;
    out[prefix + "quantile_coverage"] = array(result.quantile_coverage);
  }
  if (!result.mae_per_step.empty()) out[prefix + "mae_per_step"] = array(result.mae_per_step);
}

namespace {
// Eager steps before the capture of device.cuda_graphs (torch's examples use 3 to 11).
constexpr int kGraphWarmupSteps = 3;

// Every rank of the communicator sees the same reduced value, so all throw together.
void check_finite(double loss, std::int64_t step) {
  if (std::isfinite(loss)) return;
  throw CollectiveError("training diverged: the loss is " + std::string(std::isnan(loss) ? "NaN" : "infinite") +
                            " at step " + std::to_string(step) +
                            " (lower optimizer.lr, set train.grad_clip_norm, or check the data)",
                        0, 1);
}
}  // namespace

TrainResult Trainer::run() {
  const TrainConfig& tc = config_.train;
  const bool root = comm_.rank() == 0;
  const auto seed = static_cast<std::uint64_t>(tc.seed);
  const std::int64_t global_batch = tc.batch_size;
  ModelImpl& model = *model_;
  if (!reducer_) {
    nccl_ = std::make_unique<NcclCommunicator>(comm_, device_, config_.comm.nccl_timeout);
    reducer_ =
        std::make_unique<GradientReducer>(model_->parameters(), config_.comm.bucket_mb, comm_, overlap_, nccl_.get());
  }
  GradientReducer& reducer = *reducer_;

  // Dropout draws differ per rank, reproducibly.
  torch::manual_seed(stream_seed(seed, Stream::Model, static_cast<std::uint64_t>(comm_.rank()) + 1));
  LoopPosition at;
  RankState mine;
  if (resume_) {
    // Every rank restores its own state: no broadcast, which would replace this rank's
    // batch-norm statistics with rank 0's.
    mine.rng = at::detail::getDefaultCPUGenerator().get_state();
    restore_checkpoint(*resume_, model, *optimizer_, mine, comm_);
    at = resume_->position;
    if (scaler_.enabled() && at.loss_scale > 0) {
      scaler_.restore(LossScalerState{at.loss_scale, at.loss_scale_growth_tracker, at.skipped_steps});
    }
    if (resume_->world_size == comm_.size()) {
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(mine.rng);
    } else {
      // Another rank count: this rank's share of each epoch's sums is unknown; the epoch in
      // progress reports the figures of its steps after the resume.
      mine.epoch_loss = 0;
      mine.epoch_correct = 0;
    }
  } else {
    // Same initial parameters everywhere: rank 0's, broadcast.
    broadcast_module_state(model, comm_, 0);
  }
  model.train();

  TrainResult result;
  result.parameters = parameter_count(model);
  result.buckets = reducer.bucket_count();
  result.backend = backend_;
  result.overlap = reducer.overlapping();
  const Range slice = batch_slice(global_batch, comm_.size(), comm_.rank());
  const bool classification = data_.classification();
  const double inv_batch = 1.0 / static_cast<double>(global_batch);
  BatchPipeline pipeline(data_, config_.data, seed, slice.size(), device_.is_cuda());

  Progress progress(config_.run.progress, root, total_steps_, config_.run.log_every);
  const double start = wall_seconds();
  PhaseTimer& timer = result.timer;
  // On a GPU the phases are timed with events on the compute stream (no wait per phase).
  StepClock clock(timer, device_);
  auto mark = [&](Phase phase) { clock.mark(phase); };
  // The pipeline's two pinned input buffers: refilled only once their copy has run.
  CopyFences copied(device_, 2);
  StepProfiler profiler(config_.run.profile_start, profile_prefix_.empty() ? 0 : config_.run.profile_steps,
                        profile_prefix_ + "_rank" + std::to_string(comm_.rank()) + ".json", device_.is_cuda());
  std::int64_t step = at.step;
  double best = at.best;
  std::int64_t epochs_without_improvement = at.epochs_without_improvement;
  result.samples = at.samples;
  const json::value past_records = json::parse(at.epochs_json);
  for (const auto& e : past_records.as_array()) {
    result.epochs.push_back(epoch_record_from_json(e.as_object()));
    result.train_seconds += result.epochs.back().seconds;
  }
  // Training time of the epoch in progress before the checkpoint: counted in that epoch.
  double carried_seconds = std::max(0.0, at.train_seconds - result.train_seconds);
  const bool same_ranks = !resume_ || resume_->world_size == comm_.size();
  result.stop_reason = "completed";
  double last_checkpoint = wall_seconds();
  // Writes a checkpoint of the loop standing at (epoch, steps of it done): collective.
  auto checkpoint = [&](std::int64_t epoch, std::int64_t done, double epoch_loss, std::int64_t epoch_correct,
                        double train_seconds) {
    LoopPosition p;
    p.epoch = epoch;
    p.step_in_epoch = done;
    p.step = step;
    p.best = best;
    p.epochs_without_improvement = epochs_without_improvement;
    p.train_seconds = train_seconds;
    p.samples = result.samples;
    json::array records;
    for (const auto& r : result.epochs) records.push_back(to_json(r));
    p.epochs_json = compact_json(records);
    if (scaler_.enabled()) {
      const LossScalerState scaling = scaler_.state();
      p.loss_scale = scaling.scale;
      p.loss_scale_growth_tracker = scaling.growth_tracker;
      p.skipped_steps = scaling.skipped_steps;
    }
    synchronize_optimizer_state(*optimizer_);  // step counts advanced on the device
    RankState state;
    state.rng = at::detail::getDefaultCPUGenerator().get_state();
    state.epoch_loss = epoch_loss;
    state.epoch_correct = epoch_correct;
    const std::string path = checkpoint_dir_ + "/" + checkpoint_file_name(step);
    const double t0 = wall_seconds();
    collective_check(comm_, [&] {
      save_checkpoint(path, resolved_json_, model_description(), p, model, *optimizer_, state, comm_);
      if (root) prune_checkpoints(checkpoint_dir_, config_.checkpoint.keep);
    });
    last_checkpoint = wall_seconds();
    result.checkpoints += 1;
    result.checkpoint_seconds += last_checkpoint - t0;
    if (root) progress.message("checkpoint " + path);
    return path;
  };
  const bool timed = checkpoint_dir_.size() > 0 && config_.checkpoint.every_minutes > 0;
  if (config_.device.cuda_graphs && !graphs_ && root) {
    progress.message("device.cuda_graphs: ignored, this run computes on the CPU");
  }
  // With device.cuda_graphs every tensor the step touches lives across steps: the inputs
  // are copied into fixed buffers, the outputs and the epoch's sums stay where they are.
  std::unique_ptr<StepGraph> graph;
  if (graphs_) graph = std::make_unique<StepGraph>(device_, kGraphWarmupSteps);
  torch::Tensor input, targets, logits, local_sum;
  auto epoch_loss = torch::zeros({}, torch::dtype(torch::kDouble).device(device_));
  auto correct = torch::zeros({}, torch::dtype(torch::kLong).device(device_));
  // Forward, backward, reduction, unscaling, clipping and the optimizer step. In a graph the
  // phase marks are left out (the replay is charged to forward).
  auto train_step = [&] {
    auto mark_eager = [&](Phase phase) {
      if (!graphs_) mark(phase);
    };
    {
      AutocastScope autocast(config_.precision.mode, device_.type());
      logits = model.forward(config_.model.channels_last ? input.contiguous(torch::MemoryFormat::ChannelsLast) : input);
      // Sum over local samples / global batch: the reduced sum is the global mean. The
      // loss is computed in fp32 whatever the autocast.
      local_sum = loss_sum(loss_, logits.to(torch::kFloat), targets);
    }
    auto loss = local_sum * inv_batch;
    mark_eager(Phase::Forward);
    scaler_.scale_loss(loss).backward();
    mark_eager(Phase::Backward);
    reducer.finish();
    mark_eager(Phase::CommExposed);
    // fp16: unscale the reduced gradients (equal on every rank, so every rank decides the
    // same), skip the step on inf/NaN, then clip and step.
    if (device_side_) {
      // Decided on the device: the fused optimizer skips its update where the flag is set.
      const auto found_inf = scaler_.unscale_to_flag(reducer.buckets());
      if (tc.grad_clip_norm > 0) reducer.clip_to_norm(tc.grad_clip_norm);
      if (found_inf.defined()) skip_next_step_on(*optimizer_, found_inf);
      optimizer_->step();
      if (found_inf.defined()) scaler_.update(found_inf);
    } else {
      const bool found_inf = scaler_.unscale(reducer.buckets());
      if (!found_inf) {
        if (tc.grad_clip_norm > 0) reducer.clip_to_norm(tc.grad_clip_norm);
        optimizer_->step();
      }
      scaler_.update(found_inf);
    }
    mark_eager(Phase::Optimizer);
    torch::NoGradGuard no_grad;
    epoch_loss += local_sum.detach().to(torch::kDouble);
    if (classification) correct += logits.argmax(1).eq(targets).sum();
  };

  for (std::int64_t epoch = at.epoch; epoch < tc.epochs && step < total_steps_; ++epoch) {
    const double epoch_start = wall_seconds();
    timer.restart();
    std::vector<std::int64_t> indices;
    Samples rows = data_.epoch(epoch, global_batch, comm_, &indices);
    const std::int64_t first = epoch == at.epoch ? at.step_in_epoch : 0;
    const std::int64_t epoch_steps = std::min(per_epoch_, total_steps_ - (step - first));
    pipeline.start_epoch(std::move(rows), std::move(indices), epoch, epoch_steps, first);
    timer.mark(Phase::Data);
    clock.start();

    // Per-step figures stay on the device side as tensors; .item() only at log steps.
    epoch_loss.fill_(first > 0 ? mine.epoch_loss : 0.0);
    correct.fill_(first > 0 ? mine.epoch_correct : 0);
    const double train_seconds_before = result.train_seconds;
    double lr = 0;
    for (std::int64_t s = first; s < epoch_steps; ++s) {
      profiler.before_step(step);
      // next() hands over buffer s % 2 and refills the other one, which step s - 1 read.
      copied.wait(static_cast<std::size_t>((s + 1) % 2));
      const Batch host_batch = pipeline.next();
      // Pinned host batches copy to the GPU asynchronously, ordered on the compute stream.
      if (graphs_) {
        if (!input.defined()) {
          input =
              torch::empty(host_batch.input.sizes(), host_batch.input.options().device(device_).pinned_memory(false));
          targets = torch::empty(host_batch.targets.sizes(),
                                 host_batch.targets.options().device(device_).pinned_memory(false));
        }
        if (host_batch.input.sizes() != input.sizes() || host_batch.targets.sizes() != targets.sizes()) {
          throw RuntimeFailure("device.cuda_graphs: a batch of another shape at step " + std::to_string(step) +
                               " (a captured step needs equal batches)");
        }
        input.copy_(host_batch.input, /*non_blocking=*/true);
        targets.copy_(host_batch.targets, /*non_blocking=*/true);
      } else {
        input = host_batch.input.to(device_, /*non_blocking=*/true);
        targets = host_batch.targets.to(device_, /*non_blocking=*/true);
      }
      copied.record(static_cast<std::size_t>(s % 2));
      lr = schedule_->at(step);
      set_learning_rate(*optimizer_, lr);
      // A captured step keeps its gradient buffers: they are where its replays write.
      if (!graph || !graph->captured()) reducer.zero();
      mark(Phase::Data);

      if (graph) {
        graph->run(train_step);
        mark(Phase::Forward);
      } else {
        train_step();
      }

      const std::string trace = profiler.after_step(step);
      if (root && !trace.empty()) progress.message("profile " + trace);
      ++step;
      if (step_callback_) step_callback_();
      if (!checkpoint_dir_.empty()) {
        // Every rank must take the same decision: the step count is the same everywhere,
        // while the clock and the signals are agreed with one small reduction.
        double flags[2] = {
            static_cast<double>(preemption_signal()),
            timed && wall_seconds() - last_checkpoint >= 60.0 * config_.checkpoint.every_minutes ? 1.0 : 0.0};
        if (comm_.size() > 1) {
          if (!root) flags[1] = 0;  // rank 0's clock decides
          comm_.allreduce_max(flags, 2);
        }
        const bool due = (config_.checkpoint.every_steps > 0 && step % config_.checkpoint.every_steps == 0) ||
                         flags[1] != 0 || flags[0] != 0;
        if (due) {
          const std::string path = checkpoint(epoch, s + 1, epoch_loss.item<double>(), correct.item<std::int64_t>(),
                                              train_seconds_before + carried_seconds + wall_seconds() - epoch_start);
          if (flags[0] != 0) {
            progress.finish();
            throw CollectiveError(std::string("preempted by ") + signal_name(static_cast<int>(flags[0])) + " at step " +
                                      std::to_string(step) + ": checkpoint " + path +
                                      " written; run again with checkpoint.resume=auto to go on",
                                  0, kPreemptedExitCode);
          }
        }
      } else if (stop_on_preemption_) {
        double flag = static_cast<double>(preemption_signal());
        if (comm_.size() > 1) comm_.allreduce_max(&flag, 1);
        if (flag != 0) {
          progress.finish();
          throw CollectiveError(
              std::string("preempted by ") + signal_name(static_cast<int>(flag)) + " at step " + std::to_string(step),
              0, kPreemptedExitCode);
        }
      }
      const bool log_step = step % config_.run.log_every == 0 || step == total_steps_;
      if (log_step) {
        double global_loss = local_sum.item<double>();
        comm_.allreduce_sum(&global_loss, 1);
        global_loss *= inv_batch;
        check_finite(global_loss, step);
        const double elapsed = wall_seconds() - epoch_start;
        const double rate = static_cast<double>((s + 1) * global_batch) / std::max(elapsed, 1e-9);
        if (root) {
          log_.write(json::object{{"type", "step"},
                                  {"step", step},
                                  {"epoch", epoch},
                                  {"loss", global_loss},
                                  {"lr", lr},
                                  {"samples_per_s", rate},
                                  {"elapsed_s", wall_seconds() - start}});
        }
        progress.step(step, epoch, global_loss, rate);
      }
      mark(Phase::Data);  // bookkeeping is charged to data
    }
    // The epoch ends when the GPU has run its steps.
    clock.flush();
    synchronize(device_);
    EpochRecord rec;
    rec.epoch = epoch;
    rec.classification = classification;
    rec.lr = lr;
    rec.seconds = wall_seconds() - epoch_start + (same_ranks ? carried_seconds : 0.0);
    carried_seconds = 0;
    // Samples of the epoch's steps, including those before a resume (their sums came with it).
    const double seen = static_cast<double>((same_ranks ? epoch_steps : epoch_steps - first) * slice.size());
    std::vector<double> sums{epoch_loss.item<double>(), static_cast<double>(correct.item<std::int64_t>()), seen};
    comm_.allreduce_sum(sums.data(), sums.size());
    rec.train_loss = sums[0] / std::max(1.0, sums[2]);
    rec.train_accuracy = sums[1] / std::max(1.0, sums[2]);
    check_finite(rec.train_loss, step);
    rec.samples_per_s = sums[2] / std::max(rec.seconds, 1e-9);
    result.samples += static_cast<std::int64_t>(sums[2]);
    result.train_seconds += rec.seconds;
    timer.restart();
    if (!data_.split().validation.empty()) {
      const auto val = evaluate_split(data_.validation());
      rec.val_loss = val.loss;
      rec.val_accuracy = val.accuracy;
      rec.has_validation = true;
    }
    if (tc.test_every_epoch) {
      const auto test = evaluate_split(data_.test());
      rec.test_loss = test.loss;
      rec.test_accuracy = test.accuracy;
      rec.has_test = true;
    }
    timer.mark(Phase::Eval);
    rec.train_seconds_total = result.train_seconds;
    result.epochs.push_back(rec);
    if (root) {
      json::object line{{"type", "epoch"}};
      for (const auto& kv : to_json(rec)) line[kv.key()] = kv.value();
      log_.write(line);
      char text[320];
      auto figures = [&](const char* what, double loss, double accuracy) {
        if (classification) {
          std::snprintf(text, sizeof(text), "%s loss %.4f acc %.4f", what, loss, accuracy);
        } else {
          std::snprintf(text, sizeof(text), "%s loss %.4f", what, loss);
        }
        return std::string(text);
      };
      std::string line_text =
          log_prefix_ + "epoch " + std::to_string(epoch) + ": " + figures("train", rec.train_loss, rec.train_accuracy);
      if (rec.has_validation) line_text += " | " + figures("val", rec.val_loss, rec.val_accuracy);
      if (rec.has_test) line_text += " | " + figures("test", rec.test_loss, rec.test_accuracy);
      std::snprintf(text, sizeof(text), " | %.0f samples/s | %.1f s", rec.samples_per_s, rec.seconds);
      line_text += text;
      progress.message(line_text);
    }
    if (step_callback_) step_callback_();
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
  if (result.stop_reason == "completed" && step < per_epoch_ * tc.epochs) result.stop_reason = "max_steps";
  result.steps = step;
  if (!checkpoint_dir_.empty() && config_.checkpoint.at_end && step > at.step) {
    checkpoint(static_cast<std::int64_t>(result.epochs.size()), 0, 0.0, 0, result.train_seconds);
  }
  result.comm = reducer.times();
  result.skipped_steps = scaler_.state().skipped_steps;
  result.loss_scale = scaler_.scale();
  result.cuda_graphs = graph && graph->captured();
  progress.finish();

  if (tc.test_at_end) {
    timer.restart();
    result.test = evaluate_split(data_.test());
    result.has_test = true;
    timer.mark(Phase::Eval);
    if (root) {
      json::object line{{"type", "test"}, {"loss", result.test.loss}, {"samples", result.test.count}};
      if (classification) {
        line["accuracy"] = result.test.accuracy;
      } else {
        line["mse"] = result.test.mse;
        line["mae"] = result.test.mae;
        add_forecast_figures(line, result.test, "");
      }
      log_.write(line);
    }
  }
  result.total_seconds = wall_seconds() - start;
  return result;
}

}  // namespace hpctrain
