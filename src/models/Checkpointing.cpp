#include "models/Checkpointing.hpp"

#include <ATen/autocast_mode.h>

#include "util/Error.hpp"

#if HPCTRAIN_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/detail/CUDAHooks.h>
#endif

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor generator_state(const torch::Device& device) {
#if HPCTRAIN_WITH_CUDA
  if (device.is_cuda()) return at::cuda::detail::getDefaultCUDAGenerator(device.index()).get_state();
#endif
  (void)device;
  return at::detail::getDefaultCPUGenerator().get_state();
}

void set_generator_state(const torch::Device& device, const torch::Tensor& state) {
  at::Generator g = at::detail::getDefaultCPUGenerator();
#if HPCTRAIN_WITH_CUDA
  if (device.is_cuda()) g = at::cuda::detail::getDefaultCUDAGenerator(device.index());
#endif
  (void)device;
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
}

// The recomputation's autocast: the first forward's state, restored however it ends, in a
// nesting level of its own. The weights' casts cached by the recomputation are dropped with it:
// left in the cache they would serve the next step's forward with the weights the optimizer
// has since changed.
class RecomputeAutocast {
 public:
  RecomputeAutocast(c10::DeviceType device, bool enabled, at::ScalarType dtype)
      : device_(device),
        was_enabled_(at::autocast::is_autocast_enabled(device)),
        was_dtype_(at::autocast::get_autocast_dtype(device)) {
    at::autocast::set_autocast_enabled(device_, enabled);
    at::autocast::set_autocast_dtype(device_, dtype);
    at::autocast::increment_nesting();
  }
  ~RecomputeAutocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, was_enabled_);
    at::autocast::set_autocast_dtype(device_, was_dtype_);
  }
  RecomputeAutocast(const RecomputeAutocast&) = delete;
  RecomputeAutocast& operator=(const RecomputeAutocast&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
};

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  // `anchor` requires grad, so that the output does even when x does not (the first block
  // sees the data): without it backward would never reach the block's parameters.
  static variable_list forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor anchor, BlockImpl* block) {
    (void)anchor;
    const auto device = x.device();
    ctx->saved_data["block"] = reinterpret_cast<std::int64_t>(block);
    ctx->saved_data["cpu_rng"] = generator_state(torch::kCPU);
    if (device.is_cuda()) ctx->saved_data["device_rng"] = generator_state(device);
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(device.type());
    ctx->saved_data["autocast_dtype"] = static_cast<std::int64_t>(at::autocast::get_autocast_dtype(device.type()));
    ctx->save_for_backward({x});
    // BlockImpl::first_forward_records: with gradients on, as in the plain forward and the
    // recomputation; the graph recorded here is dropped at once, only the output is kept.
    torch::Tensor output;
    {
      torch::AutoGradMode mode(block->first_forward_records);
      output = block->forward(block->first_forward_records ? x.detach().requires_grad_(x.requires_grad()) : x);
    }
    return {output.detach()};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const auto device = x.device();
    // The generators as they are now, restored after the recomputation.
    const auto cpu_now = generator_state(torch::kCPU);
    const auto device_now = device.is_cuda() ? generator_state(device) : torch::Tensor();
    set_generator_state(torch::kCPU, ctx->saved_data["cpu_rng"].toTensor());
    if (device.is_cuda()) set_generator_state(device, ctx->saved_data["device_rng"].toTensor());
    // Buffers (batch-norm statistics) were updated by the first forward: keep those values.
    std::vector<torch::Tensor> buffers, kept;
    for (auto& b : block->buffers()) {
      buffers.push_back(b);
      kept.push_back(b.clone());
    }
    torch::Tensor input = x.detach().requires_grad_(x.requires_grad());
    torch::Tensor output;
    {
      torch::AutoGradMode enable(true);
      RecomputeAutocast autocast(device.type(), ctx->saved_data["autocast"].toBool(),
                                 static_cast<at::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()));
      output = block->forward(input);
    }
    set_generator_state(torch::kCPU, cpu_now);
    if (device.is_cuda()) set_generator_state(device, device_now);
    // Parameters accumulate their gradients here (as in a plain backward); the input's
    // gradient goes back to the block before.
    torch::autograd::backward({output}, {grad_outputs[0].contiguous()});
    // After the backward, which saved the buffers it reads (batch norm's running statistics).
    {
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(kept[i]);
    }
    return {input.requires_grad() ? input.grad() : torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

StageBlock::StageBlock(Run run, const std::vector<std::shared_ptr<torch::nn::Module>>& modules, bool records)
    : run_(std::move(run)) {
  first_forward_records = records;
  for (std::size_t i = 0; i < modules.size(); ++i) register_module("m" + std::to_string(i), modules[i]);
}

torch::Tensor checkpointed_forward(BlockImpl& block, const torch::Tensor& x, bool checkpoint) {
  if (!checkpoint || !torch::GradMode::is_enabled() || !block.is_training()) return block.forward(x);
  static thread_local torch::Tensor anchor = torch::empty({0}, torch::requires_grad());
  return CheckpointFunction::apply(x, anchor, &block)[0];
}

std::vector<bool> checkpoint_plan(std::int64_t count, std::int64_t every, const std::vector<std::int64_t>& listed) {
  std::vector<bool> plan(static_cast<std::size_t>(count), false);
  for (std::int64_t i = 0; i < count; ++i) plan[static_cast<std::size_t>(i)] = every > 0 && i % every == 0;
  for (auto i : listed) {
    if (i < 0 || i >= count) {
      throw ConfigError("model.checkpoint_blocks: block " + std::to_string(i) + " does not exist (the model has " +
                        std::to_string(count) + " blocks, 0 .. " + std::to_string(count - 1) + ")");
    }
    plan[static_cast<std::size_t>(i)] = true;
  }
  return plan;
}

}  // namespace hpctrain
