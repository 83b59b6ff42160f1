#include "train/Trainer.hpp"

#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <tuple>

#include "comm/GradientReducer.hpp"
#include "comm/StallWatchdog.hpp"
#include "data/Sampling.hpp"
#include "launch/Mpi.hpp"
#include "models/Attention.hpp"
#include "models/Model.hpp"
#include "train/Device.hpp"
#include "train/MasterWeights.hpp"
#include "train/Milestones.hpp"
#include "train/Optimizers.hpp"
#include "train/Pipeline.hpp"
#include "train/Schedule.hpp"
#include "train/ShardedState.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"
#include "util/Random.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// precision.params=low: what it combines with (train/MasterWeights.hpp).
void check_low_precision_params(const Config& c) {
  if (c.precision.mode == "fp32") {
    throw ConfigError(
        "precision.params=low holds the weights in precision.mode's type, and precision.mode is fp32; set "
        "precision.mode to bf16 or fp16, or precision.params=fp32");
  }
  if (c.parallel.shard == "parameters") {
    throw ConfigError(
        "precision.params=low with parallel.shard=parameters: stage 3 frees the parameters it gathers, and "
        "the low-precision weights are kept whole; use parallel.shard optimizer or gradients, or "
        "precision.params=fp32");
  }
}

// device.cuda_graphs: what a captured step combines with. Its replays run on the GPU
// without the host: the gradient reduction must be NCCL's (captured with the step), the
// optimizer the fused one (skips and rates decided on the device).
void check_captured_step(const Config& c, int ranks, const std::string& backend, bool device_side) {
  if (ranks > 1 && backend != "nccl") {
    throw ConfigError("device.cuda_graphs: with " + std::to_string(ranks) +
                      " ranks the captured step must hold the gradient reduction, which NCCL's can be captured "
                      "in and MPI's (through host memory) cannot; this run reduces with MPI (comm.backend=mpi, or "
                      "ranks sharing a GPU): give each rank a GPU of its own with comm.backend nccl or auto, or "
                      "set device.cuda_graphs=false");
  }
  // NCCL captures its collectives from 2.9.6 on (PyTorch refuses older ones: capture, then hung replays).
  int major = 0, minor = 0, patch = 0;
  const std::string nccl = NcclCommunicator::version();
  const bool with_nccl = backend == "nccl" && (ranks > 1 || c.comm.backend == "nccl");
  if (with_nccl && std::sscanf(nccl.c_str(), "%d.%d.%d", &major, &minor, &patch) == 3 &&
      std::make_tuple(major, minor, patch) < std::make_tuple(2, 9, 6)) {
    throw ConfigError("device.cuda_graphs: NCCL " + nccl +
                      " cannot be captured in a CUDA graph (2.9.6 or later can); set device.cuda_graphs=false");
  }
  if (ranks > 1 && c.parallel.shard != "none") {
    throw ConfigError("device.cuda_graphs with parallel.shard=" + c.parallel.shard +
                      ": the sharded step gathers its parameters and decides its skipped steps on the host, which a "
                      "graph cannot replay; set parallel.shard=none or device.cuda_graphs=false");
  }
  if (!device_side) {
    throw ConfigError(
        "device.cuda_graphs: the captured step needs the fused optimizer, which steps without waiting for the "
        "GPU: use optimizer.name adam or adamw with optimizer.fused auto or on");
  }
  if (c.model.checkpoint_every > 0) {
    throw ConfigError(
        "device.cuda_graphs: gradient checkpointing (model.checkpoint_every) restores random-number state "
        "on the host during backward, which a graph cannot replay; set one of them off");
  }
}

}  // namespace

Trainer::Trainer(const Config& config, const ProcessGrid& grid, const ShardedDataset& data, MetricsLog& log)
    : config_(config),
      grid_(grid),
      comm_(grid.data()),
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
  choose_attention_backend(config_.device.attention, device_.is_cuda());  // and a new record of the one used
  if (!data_.classification() && tc.early_stop_patience > 0 && tc.early_stop_metric == "val_accuracy") {
    throw ConfigError("train.early_stop_metric: val_accuracy needs classification data; use val_loss");
  }
  milestones_ = std::make_unique<Milestones>(config_, data_.classification());  // checks keep_best and target
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
  build_pipeline();
  // What this rank optimizes and reduces: the whole model, or its pipeline stage's part; with
  // precision.params=low the fp32 masters of the low-precision weights in their place.
  std::vector<torch::Tensor> trained = pipeline_ ? pipeline_->parameters() : model_->parameters();
  if (config_.precision.params == "low") {
    check_low_precision_params(config_);
    masters_ = std::make_unique<MasterWeights>(*model_, trained,
                                               config_.precision.mode == "bf16" ? torch::kBFloat16 : torch::kHalf);
    trained = masters_->masters();
    if (pipeline_) pipeline_->map_released([this](const auto& weights) { return reduced(weights); });
  }
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
  // One rank reduces nothing, and takes NCCL only when asked for by name without a pipeline
  // (its one-rank communicator then runs the many-rank path: buckets, reductions, a captured step's).
  if (backend_ == "mpi" || (comm_.size() == 1 && (config_.comm.backend != "nccl" || pipeline_))) {
    reducer_ = make_reducer(trained, /*nccl=*/nullptr, overlap);
    // The sharded path reduce-scatters: no hierarchical allreduce (shard_stage() refused "on").
    if (!reducer_->sharded()) reducer_->use_hierarchical(make_hierarchical_sum(comm_, config_.comm.hierarchical));
  }
  overlap_ = overlap;
  make_stepping_optimizer(trained);
  graphs_ = config_.device.cuda_graphs && device_.is_cuda();
  if (graphs_) {
    check_captured_step(config_, grid_.group().size(), backend_, device_side_);
    // One rank without NCCL: autograd's own gradients, fresh from the graph's pool each replay
    // (no buckets). With NCCL the reducer comes in start_run(), with buckets zeroed before each
    // replay (train_epoch's step).
    if (reducer_ && reducer_->bucket_count() != 0) {
      throw std::logic_error("device.cuda_graphs: one rank without NCCL captures its step without buckets");
    }
    read_learning_rate_from_device(*optimizer_);
  }
  schedule_ = std::make_unique<LrSchedule>(config_.schedule, config_.optimizer.lr, total_steps_, per_epoch_);
}

Trainer::~Trainer() = default;

void Trainer::watch(std::int64_t step, int point) {
  if (watchdog_) watchdog_->mark(step, static_cast<StallWatchdog::Point>(point));
}

EvalResult Trainer::evaluate_split(const Samples& split) {
  // Batch-norm statistics differ per rank after training: evaluate the averaged model.
  average_module_buffers(*model_, comm_);
  match_window_gathers(*model_, reducer_->window(), comm_, split.size(), config_.train.eval_batch_size);
  // Each batch shows comm.timeout's watchdog that this rank is alive.
  const std::function<void()> between_batches = [this] {
    if (step_callback_) step_callback_();
    if (watchdog_) watchdog_->beat();
  };
  EvalResult result = evaluate(
      *model_, [&](torch::Tensor x) { return forward_to_cpu(x); }, split, data_, loss_, config_.train.eval_batch_size,
      comm_, watchdog_ || step_callback_ ? between_batches : std::function<void()>());
  if (pipeline_) share_eval_result(result, grid_.pipeline(), grid_.stages() - 1);
  return result;
}

torch::Tensor Trainer::forward_to_cpu(const torch::Tensor& input) {
  if (pipeline_) {
    // Outputs exist on the last stage; the others score placeholders that are then replaced
    // by the last stage's figures (evaluate_split).
    auto out = pipeline_->forward(input);
    return out.defined() ? out.to(torch::kCPU) : torch::zeros({input.size(0), output_size()});
  }
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
  match_window_gathers(*model_, reducer_->window(), comm_, data_.validation().size(), config_.train.eval_batch_size);
  return predict(
      *model_, [&](torch::Tensor x) { return forward_to_cpu(x); }, data_.validation(), data_, loss_,
      config_.train.eval_batch_size, step_callback_);
}

// Before the first step: the NCCL reducer (now that every rank has built its model), the per-rank
// dropout streams, and the starting point, a checkpoint's state or rank 0's parameters. Returns
// where the loop starts; `mine` receives this rank's part.
LoopPosition Trainer::start_run(RankState& mine) {
  if (!reducer_) {
    nccl_ = std::make_unique<NcclCommunicator>(comm_, device_, config_.comm.nccl_timeout);
    const auto trained = reduced(pipeline_ ? pipeline_->parameters() : model_->parameters());
    reducer_ = make_reducer(trained, nccl_.get(), overlap_);
    if (reducer_->sharded()) make_stepping_optimizer(trained);  // over the chunks now
  }
  // Dropout draws differ per rank, reproducibly.
  torch::manual_seed(stream_seed(static_cast<std::uint64_t>(config_.train.seed), Stream::Model,
                                 static_cast<std::uint64_t>(grid_.group().rank()) + 1));
  LoopPosition at;
  WholeParameters whole(reducer_->window(), /*write_back=*/true);  // stage 3: written whole, kept as chunks
  MasterWeights::Exposed exposed(masters_.get(), /*write_back=*/true, optimizer_.get());  // restored or broadcast
  if (resume_) {
    // Every rank restores its own state (a broadcast would replace its batch-norm statistics),
    // checked together: with a pipeline, a changed model may show on some stages only.
    mine.rng = at::detail::getDefaultCPUGenerator().get_state();
    const double t0 = wall_seconds();
    collective_check(grid_.group(), [&] { restore_from(*resume_, mine); });
    restore_seconds_ = wall_seconds() - t0;
    at = resume_->position;
    if (scaler_.enabled() && at.loss_scale > 0) {
      scaler_.restore(LossScalerState{at.loss_scale, at.loss_scale_growth_tracker, at.skipped_steps});
    }
    if (resume_->same_layout(checkpoint_layout())) {
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(mine.rng);
    } else {
      // Another grid: this rank's share of the epoch's sums is unknown; the epoch reports its steps since.
      mine.epoch_loss = 0;
      mine.epoch_correct = 0;
    }
  } else {
    // Same initial parameters everywhere: rank 0's, broadcast.
    broadcast_module_state(*model_, comm_, 0);
  }
  model_->train();
  return at;
}

}  // namespace hpctrain
