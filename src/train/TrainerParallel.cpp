// The trainer's model parallelism: microbatches (gradient accumulation), pipeline stages
// (train/Pipeline) and what a step then needs across stages (the global gradient norm, the
// fp16 skip, figures that only the last stage computes).
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "comm/GradientReducer.hpp"
#include "models/Model.hpp"
#include "train/Device.hpp"
#include "train/MasterWeights.hpp"
#include "train/MixedPrecision.hpp"
#include "train/NonFinite.hpp"
#include "train/Optimizers.hpp"
#include "train/Pipeline.hpp"
#include "train/ShardedState.hpp"
#include "train/Trainer.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

// parallel.p2p: NCCL between GPUs when asked, or by default where NCCL is compiled in and
// no two ranks share a GPU (NCCL refuses that); MPI otherwise.
bool pipeline_over_nccl(const std::string& p2p, const torch::Device& device) {
  if (p2p == "nccl" && !device.is_cuda()) {
    throw ConfigError(
        "parallel.p2p=nccl sends GPU tensors, and this run computes on the CPU (device.type); use "
        "parallel.p2p=mpi or auto");
  }
  if (p2p == "nccl" && !HPCTRAIN_WITH_NCCL) {
    throw ConfigError("parallel.p2p=nccl: this build has no NCCL (`hpctrain --version` tells); use parallel.p2p=mpi");
  }
  if (p2p == "nccl" && compute_device().shared) {
    throw ConfigError(
        "parallel.p2p=nccl: NCCL does not connect two ranks on one GPU, and this node's ranks share "
        "GPUs; use one GPU per rank, or parallel.p2p=mpi or auto");
  }
  return p2p == "nccl" || (p2p == "auto" && device.is_cuda() && HPCTRAIN_WITH_NCCL && !compute_device().shared);
}

}  // namespace

void Trainer::build_pipeline() {
  const ParallelConfig& pc = config_.parallel;
  const std::int64_t batch = config_.train.batch_size, replicas = comm_.size(), m = pc.microbatches;
  if (pc.pipeline_stages != grid_.stages())
    throw std::logic_error("Trainer: the grid has other stages than the config");
  if (pc.pipeline_stages == 1 && m == 1) return;
  if (batch % replicas != 0 || (batch / replicas) % m != 0) {
    throw ConfigError(
        "parallel.microbatches: " + std::to_string(m) + " microbatches do not divide the per-replica batch (" +
        "train.batch_size " + std::to_string(batch) + " over " + std::to_string(replicas) +
        " data-parallel replicas); use a train.batch_size that is a multiple of " + std::to_string(replicas * m));
  }
  if (config_.device.cuda_graphs && device_.is_cuda()) {
    throw ConfigError(
        "device.cuda_graphs: a captured step runs one forward and backward; parallel.microbatches and "
        "parallel.pipeline_stages need it off");
  }
  if (pc.pipeline_stages == 1) return;
  const ScheduleKind kind = parse_schedule_kind(pc.schedule);
  const PipelineShape shape{static_cast<int>(pc.pipeline_stages), static_cast<int>(m),
                            kind == ScheduleKind::Interleaved ? static_cast<int>(pc.chunks) : 1};
  check_pipeline_shape(kind, shape);
  const std::int64_t blocks = model_->pipeline_blocks();
  if (blocks == 0) {
    throw ConfigError("parallel.pipeline_stages: model.name=" + config_.model.name +
                      " is not a chain of blocks a pipeline can split (mlp, cnn, resnet and transformer are)");
  }
  const std::int64_t parts = static_cast<std::int64_t>(shape.stages) * shape.chunks;
  if (blocks < parts) {
    throw ConfigError("parallel.pipeline_stages: " + std::to_string(parts) + " stages" +
                      (shape.chunks > 1 ? " x chunks" : "") + " are more than the model's " + std::to_string(blocks) +
                      " blocks");
  }
  std::vector<double> costs;
  if (pc.stage_split.empty()) {
    // Measured on the group's first rank and shared, so every rank plans the same split.
    costs.assign(static_cast<std::size_t>(blocks), 0.0);
    // Agreed before the broadcast: a failure on the measuring rank must not leave the
    // others waiting in it.
    collective_check(grid_.group(), [&] {
      if (grid_.group().rank() != 0) return;
      costs = measure_block_costs(*model_, data_.meta().sample_shape, batch / replicas / m, device_,
                                  config_.precision.mode);
    });
    grid_.group().broadcast(costs.data(), costs.size() * sizeof(double), 0);
  }
  StagePlan plan = make_stage_plan(kind, shape, blocks, pc.stage_split, costs);
  pipeline_ = std::make_unique<PipelineEngine>(
      *model_, grid_, std::move(plan), device_, data_.meta().sample_shape, config_.precision.mode,
      config_.model.channels_last, PipelineLink{pipeline_over_nccl(pc.p2p, device_), config_.comm.nccl_timeout});
  pipeline_->drop_other_pieces();
}

ShardStage Trainer::shard_stage() const {
  const std::string& shard = config_.parallel.shard;
  if (shard == "none") return ShardStage::None;
  if (config_.comm.hierarchical == "on") {
    throw ConfigError("parallel.shard=" + shard +
                      ": sharded gradients are reduce-scattered, which comm.hierarchical=on does not do; set "
                      "comm.hierarchical to auto or off");
  }
  if (shard == "parameters" && model_->pipeline_blocks() == 0) {
    throw ConfigError(
        "parallel.shard=parameters gathers a model's parameters block by block, and model.name=" + config_.model.name +
        " is not built of blocks; use mlp, cnn, resnet or transformer, or "
        "parallel.shard=gradients");
  }
  if (shard == "parameters") return ShardStage::Parameters;
  return shard == "optimizer" ? ShardStage::Optimizer : ShardStage::Gradients;
}

std::unique_ptr<GradientReducer> Trainer::make_reducer(const std::vector<torch::Tensor>& trained,
                                                       NcclCommunicator* nccl, bool overlap) {
  const ShardStage shard = shard_stage();
  const auto groups = shard == ShardStage::Parameters ? piece_groups(*model_, trained) : std::vector<std::int64_t>{};
  auto reducer = std::make_unique<GradientReducer>(trained, config_.comm.bucket_mb, comm_, overlap, nccl,
                                                   /*alone_without_buckets=*/nccl == nullptr, shard, groups);
  if (reducer->window() != nullptr) {
    model_->set_piece_hooks(window_hooks(*reducer->window(), model_->pipeline_blocks() + 2));
  }
  return reducer;
}

void Trainer::make_stepping_optimizer(const std::vector<torch::Tensor>& trained) {
  // The reducer exists (made here with MPI, in start_run with NCCL): sharded, the optimizer
  // steps its chunks. A pipeline, or sharding, decides the fp16 skip across ranks on the
  // host: no device-side step.
  const bool sharded = shard_stage() != ShardStage::None && comm_.size() > 1;
  const bool fused = !pipeline_ && !sharded && use_fused_optimizer(config_.optimizer);
  const bool chunks = reducer_ && reducer_->sharded();
  optimizer_ = make_optimizer(config_.optimizer, chunks ? reducer_->stepped_parameters() : trained, fused);
  device_side_ = is_fused(*optimizer_);
  if (device_side_) scaler_.keep_on_device(device_);
}

torch::optim::Optimizer* Trainer::optimizer_to_save(std::unique_ptr<torch::optim::Optimizer>& gathered) {
  if (!reducer_->sharded()) return optimizer_.get();
  synchronize_optimizer_state(*optimizer_);
  gathered = gather_sharded_state(*reducer_, *optimizer_, config_.optimizer, comm_);
  // Over the reducer's parameters: with precision.params=low the masters, filed under the weights.
  if (gathered && masters_) masters_->file_state(*gathered, /*under_weights=*/true);
  return gathered.get();
}

std::vector<torch::Tensor> Trainer::reduced(const std::vector<torch::Tensor>& parameters) const {
  return masters_ ? masters_->substitute(parameters) : parameters;
}

void Trainer::restore_from(const CheckpointInfo& info, RankState& mine) {
  if (!reducer_->sharded()) {
    restore_checkpoint(info, *model_, optimizer_.get(), mine, checkpoint_layout());
    return;
  }
  // The file holds whole per-parameter state: the parameters read as an unsharded run reads
  // them, of the state only this rank's chunks.
  restore_checkpoint(info, *model_, nullptr, mine, checkpoint_layout());
  read_sharded_state(*reducer_, *optimizer_, CheckpointReader(info), reduced(model_->parameters()));
}

CheckpointLayout Trainer::checkpoint_layout() const {
  CheckpointLayout layout;
  layout.stages = grid_.stages();
  layout.replicas = grid_.replicas();
  layout.stage = grid_.stage();
  layout.replica = grid_.replica();
  if (pipeline_) {
    for (auto piece : model_->parameter_pieces()) layout.parameters.push_back(pipeline_->runs_piece(piece));
    for (auto piece : model_->buffer_pieces()) layout.buffers.push_back(pipeline_->runs_piece(piece));
    const auto& first = pipeline_->plan().first_block;
    layout.stage_split.assign(first.begin() + 1, first.end());
  }
  return layout;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::forward_backward_microbatches(const torch::Tensor& input,
                                                                               const torch::Tensor& targets,
                                                                               double inv_batch) {
  auto sum_of = [&](const torch::Tensor& outputs, const torch::Tensor& t) { return loss_sum(loss_, outputs, t); };
  auto to_backward = [&](const torch::Tensor& sum) {
    auto scaled = scaler_.scale_loss(sum * inv_batch);
    return nonfinite_ ? nonfinite_->mark_loss(scaled) : scaled;
  };
  if (pipeline_) {
    auto out = pipeline_->train_step(input, targets, sum_of, to_backward, reducer_.get());
    if (!out.loss_sum.defined()) out.loss_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat).device(device_));
    return {out.loss_sum, out.outputs};
  }
  // Gradient accumulation: the reducer starts with the last microbatch's backward.
  const std::int64_t m = config_.parallel.microbatches, rows = input.size(0) / m;
  reducer_->hold();
  torch::Tensor total;
  std::vector<torch::Tensor> outputs;
  for (std::int64_t k = 0; k < m; ++k) {
    auto x = input.narrow(0, k * rows, rows);
    if (config_.model.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    torch::Tensor out, sum;
    {
      AutocastScope autocast(config_.precision.mode, device_.type());
      out = model_->forward(x).to(torch::kFloat);
      sum = sum_of(out, targets.narrow(0, k * rows, rows));
    }
    if (k + 1 == m) reducer_->release(reduced(model_->parameters()));
    to_backward(sum).backward();
    total = total.defined() ? total + sum.detach() : sum.detach();
    outputs.push_back(out.detach());
  }
  return {total, torch::cat(outputs)};
}

std::pair<bool, torch::Tensor> Trainer::optimizer_step(std::int64_t step) {
  // The reduced gradients are equal on every rank of the data axis, so every rank decides
  // the same: fp16 unscales them and skips a step with inf/NaN (the loss scaler), fp32 and
  // bf16 apply train.nonfinite (train/NonFinite.hpp). Then clip and step.
  GradientReducer& reducer = *reducer_;
  NonFiniteGuard& nonfinite = *nonfinite_;
  const double clip = config_.train.grad_clip_norm;
  if (device_side_) {
    // Decided on the device: the fused optimizer skips its update where the flag is set.
    auto found_inf = scaler_.unscale_to_flag(reducer.buckets());
    if (!scaler_.enabled()) found_inf = nonfinite.found_in(reducer.buckets());
    if (clip > 0) reducer.clip_to_norm(clip);
    if (found_inf.defined()) skip_next_step_on(*optimizer_, found_inf);
    optimizer_->step();
    if (masters_) masters_->update_model();  // a skipped step left the masters as they were
    if (scaler_.enabled() && found_inf.defined()) scaler_.update(found_inf);
    nonfinite.add(found_inf);
    return {false, nonfinite.active() ? found_inf : torch::Tensor()};
  }
  bool found_inf = scaler_.unscale(reducer.buckets());
  if (nonfinite.active()) {
    const auto flag = nonfinite.found_in(reducer.buckets());
    found_inf = flag.defined() && flag.item<float>() != 0.0F;
  }
  if ((pipeline_ || reducer.sharded()) && (scaler_.enabled() || nonfinite.active())) {
    // Every stage (every replica's chunk, when sharded) skips the step when any overflowed.
    double any = found_inf ? 1.0 : 0.0;
    (reducer.sharded() ? grid_.group() : grid_.pipeline()).allreduce_max(&any, 1);
    found_inf = any > 0;
  }
  // Throws on every rank alike for abort, or past train.nonfinite_limit.
  const bool skip = nonfinite.decide(found_inf, step);
  if (!found_inf) {
    if (clip > 0) clip_gradients(clip);
    optimizer_->step();
    reducer.gather_parameters();             // sharded: the updated chunks to every replica
    if (masters_) masters_->update_model();  // then every master is whole
  }
  scaler_.update(found_inf);
  return {skip, torch::Tensor()};
}

void Trainer::clip_gradients(double max_norm) {
  if (!pipeline_) {
    reducer_->clip_to_norm(max_norm);
    return;
  }
  // Every stage holds other parameters (and, sharded, every replica other chunks of them):
  // the global norm sums their squares.
  const auto& gradients = reducer_->buckets();
  torch::NoGradGuard no_grad;
  double squares = 0;
  if (!gradients.empty()) {
    squares = torch::stack(torch::_foreach_norm(gradients)).to(torch::kDouble).pow(2).sum().item<double>();
  }
  (reducer_->sharded() ? grid_.group() : grid_.pipeline()).allreduce_sum(&squares, 1);
  const double factor = std::min(1.0, max_norm / (std::sqrt(squares) + 1e-6));
  if (factor < 1.0) torch::_foreach_mul_(gradients, factor);
}

void Trainer::record_parallel_figures(TrainResult& result) const {
  result.shard = config_.parallel.shard;
  result.shard_active = reducer_->sharded();
  const ReducerMemory held = reducer_->memory();
  result.parameter_bytes = held.parameters + (masters_ ? masters_->compute_bytes() : 0);
  result.gradient_bytes = held.gradients;
  result.gradient_bucket_peak_bytes = held.bucket_peak;
  result.parameter_window_peak_bytes = held.window_peak;
  result.optimizer_state_bytes = optimizer_state_bytes(*optimizer_);
  result.grid = grid_.layout();
  result.stage = grid_.stage();
  result.microbatches = config_.parallel.microbatches;
  if (!pipeline_) return;
  const StagePlan& plan = pipeline_->plan();
  result.schedule = schedule_kind_name(plan.kind);
  result.pipeline_p2p = pipeline_->nccl() ? "nccl" : "mpi";
  result.stage_split = plan.describe();
  for (const auto& p : pipeline_->parameters()) result.stage_parameters += p.numel();
  const PipelineTimes& t = pipeline_->times();
  result.pipeline_forward = t.forward;
  result.pipeline_backward = t.backward;
  result.pipeline_wait = t.wait;
  result.pipeline_steps = t.steps;
  result.pipeline_window = t.window;
  result.pipeline_window_busy = t.window_busy;
  result.pipeline_skew = t.skew;
  result.pipeline_window_steps = t.window_steps;
  result.theoretical_bubble = theoretical_bubble(plan.kind, plan.shape);
  const PipelineMemory& memory = pipeline_->memory();
  result.activation_peak_bytes = memory.activation_peak;
  result.microbatch_activation_bytes = memory.microbatch_bytes;
  result.in_flight_peak = memory.in_flight_peak;
}

void Trainer::from_last_stage(std::vector<double>& values) const {
  if (!pipeline_) return;
  grid_.pipeline().broadcast(values.data(), values.size() * sizeof(double), grid_.stages() - 1);
}

}  // namespace hpctrain
