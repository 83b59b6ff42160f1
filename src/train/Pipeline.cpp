#include "train/Pipeline.hpp"

#include <algorithm>
#include <deque>
#include <stdexcept>

#include "comm/GradientReducer.hpp"
#include "models/Model.hpp"
#include "train/Device.hpp"
#include "train/MixedPrecision.hpp"
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

std::string StagePlan::describe() const {
  std::string out;
  for (int k = 0; k < virtual_stages(); ++k) {
    const auto first = first_block[static_cast<std::size_t>(k)];
    const auto last = piece_end(k) - 2;  // pieces are blocks + 1; the head is piece blocks + 1
    out += (k ? " | " : "") + std::string(k == 0 ? "stem+" : "") + "blocks " + std::to_string(first) + "-" +
           std::to_string(std::min(last, blocks - 1)) + (k + 1 == virtual_stages() ? "+head" : "");
  }
  return out;
}

std::vector<double> measure_block_costs(ModelImpl& model, const std::vector<std::int64_t>& sample, std::int64_t rows,
                                        const torch::Device& device, const std::string& precision) {
  const std::int64_t blocks = model.pipeline_blocks();
  std::vector<double> piece(static_cast<std::size_t>(blocks + 2), 1e300);
  const bool training = model.is_training();
  model.eval();
  std::vector<std::int64_t> shape{rows};
  shape.insert(shape.end(), sample.begin(), sample.end());
  for (int round = 0; round < 3; ++round) {
    torch::Tensor x = torch::zeros(shape, torch::TensorOptions(device));
    for (std::int64_t i = 0; i < blocks + 2; ++i) {
      auto in = x.detach();
      if (i > 0 && in.is_floating_point()) in.requires_grad_(true);
      synchronize(device);
      const double t0 = wall_seconds();
      torch::Tensor y;
      {
        AutocastScope autocast(precision, device.type());
        y = model.run_piece(i, in);
      }
      if (y.requires_grad()) y.to(torch::kFloat).sum().backward();  // a stem without parameters has none
      synchronize(device);
      auto& best = piece[static_cast<std::size_t>(i)];
      best = std::min(best, wall_seconds() - t0);
      x = y.detach();
    }
  }
  for (auto& p : model.parameters()) p.mutable_grad().reset();
  model.train(training);
  std::vector<double> costs(piece.begin() + 1, piece.end() - 1);
  costs.front() += piece.front();
  costs.back() += piece.back();
  return costs;
}

StagePlan make_stage_plan(ScheduleKind kind, const PipelineShape& shape, std::int64_t blocks,
                          const std::vector<std::int64_t>& explicit_list, const std::vector<double>& block_costs) {
  check_pipeline_shape(kind, shape);
  StagePlan plan;
  plan.kind = kind;
  plan.shape = shape;
  plan.blocks = blocks;
  const int parts = shape.stages * shape.chunks;
  plan.first_block =
      explicit_list.empty() ? balanced_split(block_costs, parts) : explicit_split(explicit_list, blocks, parts);
  return plan;
}

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
                               std::vector<std::int64_t> sample_shape, std::string precision, bool channels_last)
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
  return torch::empty(shape, torch::TensorOptions(b.dtype));  // host: MPI reads and writes it
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
  // A received input on the CPU is the receive buffer itself, allocated before `before`.
  mc.held = std::max<std::int64_t>(0, bytes_in_use() - before) +
            (k > 0 && !x.is_cuda() ? static_cast<std::int64_t>(x.nbytes()) : 0);
  held_ += mc.held;
  ++held_pairs_;
  memory_.activation_peak = std::max(memory_.activation_peak, held_);
  memory_.in_flight_peak = std::max(memory_.in_flight_peak, held_pairs_);
  memory_.microbatch_bytes = std::max(memory_.microbatch_bytes, mc.held);
  times_.forward += wall_seconds() - f0;
}

PipelineEngine::StepOutput PipelineEngine::train_step(const torch::Tensor& input, const torch::Tensor& targets,
                                                      const LossFn& loss_fn, const ToBackward& to_backward,
                                                      GradientReducer* reducer) {
  const double t0 = wall_seconds(), busy0 = times_.forward + times_.backward;
  const Communicator& pipe = grid_.pipeline();
  const int p = plan_.shape.stages, m = plan_.shape.microbatches, v = plan_.shape.chunks;
  const int last = plan_.virtual_stages() - 1;
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
        const int peer = dir == kActivation ? (grid_.stage() + p - 1) % p : (grid_.stage() + 1) % p;
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

  for (std::size_t i = 0; i < actions_.size(); ++i) {
    post_ahead(i);
    const PipeAction& a = actions_[i];
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
        send(mc.output.detach(), (grid_.stage() + 1) % p, tag(kActivation, k + 1, a.microbatch));
        break;
      case PipeOp::Backward: {
        const double b0 = wall_seconds();
        auto& done = backwards_done[static_cast<std::size_t>(a.chunk)];
        if (reducer != nullptr && done + 1 == m) reducer->release(chunk_params_[static_cast<std::size_t>(a.chunk)]);
        if (k == last) {
          to_backward(mc.loss).backward();
        } else {
          torch::autograd::backward({mc.output}, {mc.grad_buffer.to(device_)});
        }
        ++done;
        mc.output = mc.loss = mc.grad_buffer = torch::Tensor();
        held_ -= mc.held;
        --held_pairs_;
        times_.backward += wall_seconds() - b0;
        break;
      }
      case PipeOp::SendGradient:
        send(mc.input.grad(), (grid_.stage() + p - 1) % p, tag(kGradient, k - 1, a.microbatch));
        mc.input = torch::Tensor();
        break;
    }
  }
  const double w0 = wall_seconds();
  for (auto& s : transit.sends) s.first.wait();
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

// Microbatch by microbatch, chunk by chunk: every dependency (the previous virtual stage of
// the same microbatch) comes earlier in that order on its own rank, so nothing waits in a cycle.
torch::Tensor PipelineEngine::forward(const torch::Tensor& input) {
  const Communicator& pipe = grid_.pipeline();
  const int p = plan_.shape.stages, v = plan_.shape.chunks, last = plan_.virtual_stages() - 1;
  const std::int64_t n = input.size(0);
  const std::int64_t rows = std::max<std::int64_t>(1, (n + plan_.shape.microbatches - 1) / plan_.shape.microbatches);
  torch::NoGradGuard no_grad;
  Transit transit;
  std::vector<torch::Tensor> outputs;
  int index = 0;
  for (std::int64_t begin = 0; begin < n; begin += rows, ++index) {
    const std::int64_t count = std::min(rows, n - begin);
    for (int c = 0; c < v; ++c) {
      const int k = virtual_of(c);
      torch::Tensor x;
      if (k == 0) {
        x = input.narrow(0, begin, count).to(device_, /*non_blocking=*/true);
        if (channels_last_ && x.dim() == 4) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      } else {
        torch::Tensor buffer = receive_buffer(k, count);
        const double w0 = wall_seconds();
        pipe.irecv(buffer.data_ptr(), buffer.nbytes(), (grid_.stage() + p - 1) % p, tag(kActivation, k, index % 16384))
            .wait();
        times_.wait += wall_seconds() - w0;
        x = buffer.to(device_);
      }
      torch::Tensor y;
      {
        AutocastScope autocast(precision_, device_.type());
        y = run_chunk(c, x);
      }
      if (k == last) {
        outputs.push_back(y.to(torch::kFloat));
      } else {
        torch::Tensor host = to_host_for_mpi(y);
        transit.sends.emplace_back(
            pipe.isend(host.data_ptr(), host.nbytes(), (grid_.stage() + 1) % p, tag(kActivation, k + 1, index % 16384)),
            host);
        transit.reap();
      }
    }
  }
  for (auto& s : transit.sends) s.first.wait();
  if (!grid_.last_stage()) return torch::Tensor();
  if (outputs.empty()) return torch::Tensor();
  return torch::cat(outputs);
}

}  // namespace hpctrain
