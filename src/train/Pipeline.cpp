#include "train/Pipeline.hpp"

#include <algorithm>
#include <deque>
#include <stdexcept>

#include "comm/GradientReducer.hpp"
#include "comm/NcclCommunicator.hpp"
#include "models/Model.hpp"
#include "train/Device.hpp"
#include "train/MixedPrecision.hpp"
#include "train/PipelineGroups.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

constexpr int kActivation = 0, kGradient = 1;
constexpr int kTagLimit = 32767;  // MPI guarantees tags up to here
constexpr int kShapeTag = kTagLimit;
constexpr std::size_t kShapeWords = 10;    // [dtype, dims, d0 ... d7]
constexpr std::size_t kReceivesAhead = 2;  // posted receives per direction
constexpr std::size_t kSettleSteps = 16;   // passes per agreement of their common windows

torch::Tensor to_host_for_mpi(const torch::Tensor& t) {
  return t.is_cuda() ? t.to(torch::kCPU) : t.contiguous();
}

}  // namespace

// One (microbatch, chunk) during a step: its input (a leaf with gradients when received),
// output, loss, the gradient that arrived for its output, and posted receives.
struct PipelineEngine::Micro {
  torch::Tensor input, output, loss;
  torch::Tensor act_buffer, grad_buffer;  // receive buffers (host on GPUs)
  std::int64_t held = 0;                  // bytes its forward left for its backward (PipelineMemory)
  Request* act_request = nullptr;
  Request* grad_request = nullptr;
};

// Messages in flight: sends kept alive until complete, receives posted ahead.
struct PipelineEngine::Transit {
  std::deque<std::pair<Request, torch::Tensor>> sends;
  std::deque<Request> receives;  // stable addresses (deque grows at the ends)
  void reap() {
    while (!sends.empty() && sends.front().first.test()) sends.pop_front();
  }
};

PipelineEngine::PipelineEngine(ModelImpl& model, const ProcessGrid& grid, StagePlan plan, torch::Device device,
                               std::vector<std::int64_t> sample_shape, std::string precision, bool channels_last,
                               PipelineLink link)
    : model_(model),
      grid_(grid),
      plan_(std::move(plan)),
      device_(device),
      sample_shape_(std::move(sample_shape)),
      precision_(std::move(precision)),
      channels_last_(channels_last) {
  if (model_.pipeline_blocks() < 1) throw std::logic_error("PipelineEngine: the model has no pipeline blocks");
  if (plan_.shape.stages != grid_.stages()) throw std::logic_error("PipelineEngine: plan and grid disagree");
  actions_ = pipeline_actions(plan_.kind, plan_.shape, grid_.stage());
  const auto pieces = model_.parameter_pieces();
  const auto params = model_.parameters();
  chunk_params_.resize(static_cast<std::size_t>(plan_.shape.chunks));
  for (std::size_t i = 0; i < params.size(); ++i) {
    for (int c = 0; c < plan_.shape.chunks; ++c) {
      const int k = virtual_of(c);
      if (pieces[i] >= plan_.piece_begin(k) && pieces[i] < plan_.piece_end(k)) {
        chunk_params_[static_cast<std::size_t>(c)].push_back(params[i]);
        owned_.push_back(params[i]);
      }
    }
  }
  agree_shapes();
  if (link.nccl) {
    nccl_ = std::make_unique<NcclCommunicator>(grid_.pipeline(), device_, link.timeout_seconds);
    nccl_actions_ = nccl_order(plan_.kind, plan_.shape, grid_.stage(), actions_);
  }
  grid_.pipeline().barrier();
  clock_zero_ = wall_seconds();
}

PipelineEngine::~PipelineEngine() = default;

void PipelineEngine::record_window(double start, double end, double busy) {
  pass_bounds_.push_back(start - clock_zero_);
  pass_bounds_.push_back(end - clock_zero_);
  unsettled_busy_ += busy;
  const std::size_t n = pass_bounds_.size() / 2;
  if (n < kSettleSteps) return;
  // One maximum over [end..., start..., -start...] gives the latest end, the latest start
  // and the earliest start of each pass.
  std::vector<double> v(3 * n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = pass_bounds_[2 * i + 1];
    v[n + i] = pass_bounds_[2 * i];
    v[2 * n + i] = -pass_bounds_[2 * i];
  }
  const Communicator& pipe = grid_.pipeline();
  pipe.allreduce_max(v.data(), v.size());
  for (std::size_t i = 0; i < n; ++i) {
    times_.window += v[i] + v[2 * n + i];
    times_.skew += v[n + i] + v[2 * n + i];
  }
  times_.window_busy += unsettled_busy_;
  times_.window_steps += static_cast<std::int64_t>(n);
  pass_bounds_.clear();
  unsettled_busy_ = 0;
  pipe.barrier();  // a fresh common clock: nodes' clocks drift apart
  clock_zero_ = wall_seconds();
}

bool PipelineEngine::runs_piece(std::int64_t piece) const {
  for (int c = 0; c < plan_.shape.chunks; ++c) {
    const int k = virtual_of(c);
    if (piece >= plan_.piece_begin(k) && piece < plan_.piece_end(k)) return true;
  }
  return false;
}

bool PipelineEngine::last_stage() const {
  return grid_.last_stage();
}

void PipelineEngine::drop_other_pieces() {
  torch::NoGradGuard no_grad;
  const auto pieces = model_.parameter_pieces();
  auto params = model_.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!runs_piece(pieces[i])) params[i].set_data(torch::empty({0}, params[i].options()));
  }
  const auto buffer_pieces = model_.buffer_pieces();
  auto buffers = model_.buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (!runs_piece(buffer_pieces[i])) buffers[i].set_data(torch::empty({0}, buffers[i].options()));
  }
}

std::int64_t PipelineEngine::bytes_in_use() const {
  return device_.is_cuda() ? device_memory(device_).allocated : heap_in_use();
}

torch::Tensor PipelineEngine::run_chunk(int chunk, torch::Tensor x) {
  const int k = virtual_of(chunk);
  for (auto piece = plan_.piece_begin(k); piece < plan_.piece_end(k); ++piece) x = model_.run_hooked(piece, x);
  return x;
}

int PipelineEngine::tag(int direction, int receiver_virtual, int microbatch) const {
  const long long v = plan_.virtual_stages();
  return static_cast<int>(((direction * v + receiver_virtual) * plan_.shape.microbatches + microbatch) % kTagLimit);
}

torch::Tensor PipelineEngine::receive_buffer(int receiver_virtual, std::int64_t rows) const {
  const Boundary& b = inbound_[static_cast<std::size_t>(receiver_virtual)];
  std::vector<std::int64_t> shape{rows};
  shape.insert(shape.end(), b.shape.begin(), b.shape.end());
  return torch::empty(shape, torch::TensorOptions(b.dtype).device(nccl_ ? device_ : torch::Device(torch::kCPU)));
}

// Virtual stage by virtual stage: run the chunk on two zero samples (evaluation mode, no
// gradients: no statistics or random state change) and tell the next stage what it gets.
void PipelineEngine::agree_shapes() {
  const Communicator& pipe = grid_.pipeline();
  const int p = plan_.shape.stages, last = plan_.virtual_stages() - 1;
  inbound_.assign(static_cast<std::size_t>(plan_.virtual_stages()), Boundary{});
  const bool training = model_.is_training();
  model_.eval();
  torch::NoGradGuard no_grad;
  std::vector<std::vector<std::int64_t>> sent;
  sent.reserve(static_cast<std::size_t>(plan_.shape.chunks));
  std::vector<Request> sends;
  for (int c = 0; c < plan_.shape.chunks; ++c) {
    const int k = virtual_of(c);
    torch::Tensor x;
    if (k == 0) {
      std::vector<std::int64_t> shape{2};
      shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
      x = torch::zeros(shape, torch::TensorOptions(device_));
    } else {
      std::vector<std::int64_t> words(kShapeWords);
      pipe.irecv(words.data(), words.size() * sizeof(std::int64_t), (grid_.stage() + p - 1) % p, kShapeTag).wait();
      Boundary& b = inbound_[static_cast<std::size_t>(k)];
      b.dtype = static_cast<torch::ScalarType>(words[0]);
      b.shape.assign(words.begin() + 2, words.begin() + 2 + words[1]);
      std::vector<std::int64_t> shape{2};
      shape.insert(shape.end(), b.shape.begin(), b.shape.end());
      x = torch::zeros(shape, torch::TensorOptions(b.dtype).device(device_));
    }
    if (k == 0 && channels_last_ && x.dim() == 4) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    torch::Tensor y;
    {
      AutocastScope autocast(precision_, device_.type());
      y = run_chunk(c, x);
    }
    if (k == last) continue;
    if (y.dim() > static_cast<std::int64_t>(kShapeWords) - 1) {
      throw RuntimeFailure("pipeline: an activation of " + std::to_string(y.dim()) + " dimensions between stages");
    }
    std::vector<std::int64_t> words(kShapeWords, 0);
    words[0] = static_cast<std::int64_t>(y.scalar_type());
    words[1] = y.dim() - 1;
    for (std::int64_t d = 1; d < y.dim(); ++d) words[static_cast<std::size_t>(d + 1)] = y.size(d);
    // The gradient this stage receives for its output has the next stage's input shape.
    Boundary& next = inbound_[static_cast<std::size_t>(k) + 1];
    next.dtype = y.scalar_type();
    next.shape.assign(y.sizes().begin() + 1, y.sizes().end());
    sent.push_back(std::move(words));
    sends.push_back(
        pipe.isend(sent.back().data(), kShapeWords * sizeof(std::int64_t), (grid_.stage() + 1) % p, kShapeTag));
  }
  for (auto& s : sends) s.wait();
  model_.train(training);
}

// Forward of one (microbatch, chunk): its input is the batch's rows on the first virtual
// stage, else the received activation (a leaf with gradients); the last also takes the loss.
void PipelineEngine::run_forward(const PipeAction& a, Micro& mc, const torch::Tensor& input,
                                 const torch::Tensor& targets, std::int64_t rows, const LossFn& loss_fn,
                                 std::vector<torch::Tensor>& outputs, torch::Tensor& loss_total) {
  const double f0 = wall_seconds();
  const std::int64_t before = bytes_in_use();
  const int k = virtual_of(a.chunk);
  torch::Tensor x;
  if (k == 0) {
    x = input.narrow(0, a.microbatch * rows, rows).to(device_, /*non_blocking=*/true);
    if (channels_last_ && x.dim() == 4) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  } else {
    x = mc.act_buffer.to(device_).requires_grad_(true);
    mc.act_buffer = torch::Tensor();
    mc.input = x;
  }
  {
    AutocastScope autocast(precision_, device_.type());
    mc.output = run_chunk(a.chunk, x);
  }
  if (k == plan_.virtual_stages() - 1) {
    const auto out = mc.output.to(torch::kFloat);
    mc.loss = loss_fn(out, targets.narrow(0, a.microbatch * rows, rows).to(device_, /*non_blocking=*/true));
    outputs[static_cast<std::size_t>(a.microbatch)] = out.detach();
    loss_total = loss_total.defined() ? loss_total + mc.loss.detach() : mc.loss.detach();
  }
  // A received input on the CPU, or received by NCCL, is the receive buffer itself,
  // allocated before `before`.
  mc.held = std::max<std::int64_t>(0, bytes_in_use() - before) +
            (k > 0 && (!x.is_cuda() || nccl_) ? static_cast<std::int64_t>(x.nbytes()) : 0);
  held_ += mc.held;
  ++held_pairs_;
  memory_.activation_peak = std::max(memory_.activation_peak, held_);
  memory_.in_flight_peak = std::max(memory_.in_flight_peak, held_pairs_);
  memory_.microbatch_bytes = std::max(memory_.microbatch_bytes, mc.held);
  times_.forward += wall_seconds() - f0;
}

// Backward of one (microbatch, chunk): from the loss on the last virtual stage, else from the
// gradient received for its output. `reducer` is given with the chunk's last backward: its
// parameters' data-parallel reduction may start inside it.
void PipelineEngine::run_backward(const PipeAction& a, Micro& mc, const ToBackward& to_backward,
                                  GradientReducer* reducer) {
  const double b0 = wall_seconds();
  if (reducer != nullptr) reducer->release(chunk_params_[static_cast<std::size_t>(a.chunk)]);
  if (virtual_of(a.chunk) == plan_.virtual_stages() - 1) {
    to_backward(mc.loss).backward();
  } else {
    torch::autograd::backward({mc.output}, {mc.grad_buffer.to(device_)});
  }
  mc.output = mc.loss = mc.grad_buffer = torch::Tensor();
  held_ -= mc.held;
  --held_pairs_;
  times_.backward += wall_seconds() - b0;
}

// One NCCL group: the messages nccl_actions_[begin, end) of a training step, receives into
// device buffers made here, sends of the tensors computed for them; the compute stream's
// later work waits for the group on the device.
void PipelineEngine::exchange_nccl(std::size_t begin, std::size_t end, std::vector<Micro>& micro, std::int64_t rows) {
  std::vector<NcclCommunicator::PeerTransfer> transfers;
  for (std::size_t j = begin; j < end; ++j) {
    const PipeAction& a = nccl_actions_[j];
    Micro& mc = micro[static_cast<std::size_t>(a.microbatch * plan_.shape.chunks + a.chunk)];
    const int k = virtual_of(a.chunk), peer = message_peer(plan_.shape, grid_.stage(), a);
    switch (a.op) {
      case PipeOp::RecvActivation:
        transfers.push_back({mc.act_buffer = receive_buffer(k, rows), peer, false});
        break;
      case PipeOp::RecvGradient:  // the gradient of this stage's output: the next stage's input shape
        transfers.push_back({mc.grad_buffer = receive_buffer(k + 1, rows), peer, false});
        break;
      case PipeOp::SendActivation:
        transfers.push_back({mc.output.detach().contiguous(), peer, true});
        break;
      default:  // SendGradient
        transfers.push_back({mc.input.grad().contiguous(), peer, true});
        mc.input = torch::Tensor();
    }
  }
  const double w0 = wall_seconds();
  nccl_->exchange_async(transfers);
  nccl_->order_compute_after();
  times_.wait += wall_seconds() - w0;
}

PipelineEngine::StepOutput PipelineEngine::train_step(const torch::Tensor& input, const torch::Tensor& targets,
                                                      const LossFn& loss_fn, const ToBackward& to_backward,
                                                      GradientReducer* reducer) {
  const double t0 = wall_seconds(), busy0 = times_.forward + times_.backward;
  const Communicator& pipe = grid_.pipeline();
  const int m = plan_.shape.microbatches, v = plan_.shape.chunks;
  const std::int64_t n = input.size(0);
  if (n % m != 0) {
    throw ConfigError("parallel.microbatches: " + std::to_string(m) + " does not divide this replica's batch of " +
                      std::to_string(n) + " samples");
  }
  const std::int64_t rows = n / m;
  std::vector<Micro> micro(static_cast<std::size_t>(m * v));
  auto at = [&](const PipeAction& a) -> Micro& { return micro[static_cast<std::size_t>(a.microbatch * v + a.chunk)]; };
  Transit transit;
  std::vector<int> backwards_done(static_cast<std::size_t>(v), 0);
  held_ = 0;
  held_pairs_ = 0;
  memory_.microbatch_bytes = 0;
  if (times_.count == 1) memory_ = PipelineMemory{};  // the first step's figures hold one-time allocations
  if (reducer != nullptr) reducer->hold();
  std::vector<torch::Tensor> outputs(static_cast<std::size_t>(m));
  torch::Tensor loss_total;

  // Posts the next receives (two per direction) from action `from` on.
  std::size_t scan[2] = {0, 0};
  std::size_t outstanding[2] = {0, 0};
  auto post_ahead = [&](std::size_t from) {
    for (int dir : {kActivation, kGradient}) {
      const PipeOp want = dir == kActivation ? PipeOp::RecvActivation : PipeOp::RecvGradient;
      scan[dir] = std::max(scan[dir], from);
      while (outstanding[dir] < kReceivesAhead && scan[dir] < actions_.size()) {
        const PipeAction& a = actions_[scan[dir]++];
        if (a.op != want) continue;
        Micro& mc = at(a);
        const int k = virtual_of(a.chunk);
        torch::Tensor& buffer = dir == kActivation ? mc.act_buffer : mc.grad_buffer;
        // A gradient has the shape of this stage's output: the next virtual stage's input.
        buffer = receive_buffer(dir == kActivation ? k : k + 1, rows);
        const int peer = message_peer(plan_.shape, grid_.stage(), a);
        transit.receives.push_back(pipe.irecv(buffer.data_ptr(), buffer.nbytes(), peer, tag(dir, k, a.microbatch)));
        (dir == kActivation ? mc.act_request : mc.grad_request) = &transit.receives.back();
        ++outstanding[dir];
      }
    }
  };
  auto wait_for = [&](Request* request, int dir) {
    const double w0 = wall_seconds();
    request->wait();
    --outstanding[dir];
    times_.wait += wall_seconds() - w0;
  };
  auto send = [&](const torch::Tensor& t, int peer, int message_tag) {
    torch::Tensor host = to_host_for_mpi(t);
    transit.sends.emplace_back(pipe.isend(host.data_ptr(), host.nbytes(), peer, message_tag), host);
    transit.reap();
  };

  if (nccl_) nccl_->capture_compute_stream();
  const std::vector<PipeAction>& order = nccl_ ? nccl_actions_ : actions_;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const PipeAction& a = order[i];
    if (nccl_ && is_message(a.op)) {  // the run of messages from here: one group
      std::size_t end = i + 1;
      while (end < order.size() && is_message(order[end].op)) ++end;
      exchange_nccl(i, end, micro, rows);
      i = end - 1;
      continue;
    }
    if (!nccl_) post_ahead(i);
    Micro& mc = at(a);
    const int k = virtual_of(a.chunk);
    switch (a.op) {
      case PipeOp::RecvActivation:
        wait_for(mc.act_request, kActivation);
        break;
      case PipeOp::RecvGradient:
        wait_for(mc.grad_request, kGradient);
        break;
      case PipeOp::Forward:
        run_forward(a, mc, input, targets, rows, loss_fn, outputs, loss_total);
        break;
      case PipeOp::SendActivation:
        send(mc.output.detach(), message_peer(plan_.shape, grid_.stage(), a), tag(kActivation, k + 1, a.microbatch));
        break;
      case PipeOp::Backward:
        run_backward(a, mc, to_backward, ++backwards_done[static_cast<std::size_t>(a.chunk)] == m ? reducer : nullptr);
        break;
      case PipeOp::SendGradient:
        send(mc.input.grad(), message_peer(plan_.shape, grid_.stage(), a), tag(kGradient, k - 1, a.microbatch));
        mc.input = torch::Tensor();
        break;
    }
  }
  const double w0 = wall_seconds();
  for (auto& s : transit.sends) s.first.wait();
  if (nccl_) nccl_->wait();
  const double t1 = wall_seconds();
  times_.wait += t1 - w0;
  times_.steps += t1 - t0;
  ++times_.count;
  record_window(t0, t1, times_.forward + times_.backward - busy0);
  StepOutput out;
  if (grid_.last_stage()) {
    out.outputs = torch::cat(outputs);
    out.loss_sum = loss_total;
  }
  return out;
}

// Microbatch by microbatch, chunk by chunk (train/PipelineGroups forward_actions): every
// dependency (the previous virtual stage of the same microbatch) comes earlier in that order
// on its own rank, so nothing waits in a cycle, over MPI or as NCCL groups.
torch::Tensor PipelineEngine::forward(const torch::Tensor& input) {
  const Communicator& pipe = grid_.pipeline();
  const int v = plan_.shape.chunks, last = plan_.virtual_stages() - 1;
  const std::int64_t n = input.size(0);
  const std::int64_t rows = std::max<std::int64_t>(1, (n + plan_.shape.microbatches - 1) / plan_.shape.microbatches);
  const int count = static_cast<int>((n + rows - 1) / rows);
  auto rows_of = [&](int mb) { return std::min(rows, n - mb * rows); };
  const auto actions = forward_actions(PipelineShape{plan_.shape.stages, count, v}, grid_.stage());
  torch::NoGradGuard no_grad;
  Transit transit;
  std::vector<NcclCommunicator::PeerTransfer> group;                              // NCCL: the run of messages so far
  std::vector<torch::Tensor> outputs, held(static_cast<std::size_t>(count * v));  // received or to send
  if (nccl_) nccl_->capture_compute_stream();
  for (std::size_t i = 0; i < actions.size(); ++i) {
    const PipeAction& a = actions[i];
    const int k = virtual_of(a.chunk), peer = message_peer(plan_.shape, grid_.stage(), a);
    torch::Tensor& slot = held[static_cast<std::size_t>(a.microbatch * v + a.chunk)];
    const int message_tag = tag(kActivation, a.op == PipeOp::RecvActivation ? k : k + 1, a.microbatch % 16384);
    const double w0 = wall_seconds();
    if (a.op == PipeOp::RecvActivation) {
      slot = receive_buffer(k, rows_of(a.microbatch));
      if (nccl_) group.push_back({slot, peer, false});
      if (!nccl_) pipe.irecv(slot.data_ptr(), slot.nbytes(), peer, message_tag).wait();
    } else if (a.op == PipeOp::SendActivation) {
      if (nccl_) group.push_back({slot.contiguous(), peer, true});
      if (!nccl_) {
        torch::Tensor host = to_host_for_mpi(slot);
        transit.sends.emplace_back(pipe.isend(host.data_ptr(), host.nbytes(), peer, message_tag), host);
        transit.reap();
      }
      slot = torch::Tensor();
    } else {  // Forward
      torch::Tensor x =
          k == 0 ? input.narrow(0, a.microbatch * rows, rows_of(a.microbatch)).to(device_, true) : slot.to(device_);
      if (k == 0 && channels_last_ && x.dim() == 4) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      AutocastScope autocast(precision_, device_.type());
      slot = run_chunk(a.chunk, x);
      if (k == last) {
        outputs.push_back(slot.to(torch::kFloat));
        slot = torch::Tensor();
      }
    }
    const bool run_ends = i + 1 == actions.size() || !is_message(actions[i + 1].op);
    if (nccl_ && !group.empty() && run_ends) {
      nccl_->exchange_async(group);
      nccl_->order_compute_after();
      group.clear();
    }
    if (is_message(a.op)) times_.wait += wall_seconds() - w0;
  }
  for (auto& s : transit.sends) s.first.wait();
  if (nccl_) nccl_->wait();
  if (!grid_.last_stage() || outputs.empty()) return torch::Tensor();
  return torch::cat(outputs);
}

}  // namespace hpctrain
