#pragma once
// Gradient (activation) checkpointing for LibTorch's C++ API, which has none: a block run
// through checkpointed_forward keeps only its input; backward runs the block's forward again
// (with gradients on) and back-propagates through it. Activation memory then scales with the
// number of blocks instead of the layers inside them, for one extra forward per block.
//
// The recomputation sees what the first forward saw: the CPU (and on GPUs the CUDA) random
// generator state is saved and restored around it, so dropout draws the same masks, and so is
// the autocast state; the block's buffers (batch-norm running statistics) are put back after
// it, so they are updated once per step, not twice. With the same inputs the gradients equal,
// bit for bit on CPUs, those of the plain forward (tests/models/test_checkpointing.cpp).
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

namespace hpctrain {

// A unit of a model that may be checkpointed: one tensor in, one tensor out.
struct BlockImpl : torch::nn::Module {
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Run the first (kept-input-only) forward with gradients on, its graph dropped at once:
  // for blocks with kernels that choose another implementation without gradients (LibTorch's
  // CPU LSTM), whose outputs would differ from the plain forward's in the last bits. Off
  // elsewhere: recording costs time (the block's intermediates all live until it returns).
  bool first_forward_records = false;
};

// A stretch of a model that is one block for checkpointing but whose modules the model
// already owns under its own names (a Sequential's layers, a forecaster's stage): `run`
// computes it. The modules are registered here too, so that recomputation finds their
// buffers, but the stage itself is not registered in the model, so parameter names (and
// checkpoints, exports) stay the model's. The model keeps the stage's training flag in step.
struct StageBlock : BlockImpl {
  using Run = std::function<torch::Tensor(const torch::Tensor&)>;
  StageBlock(Run run, const std::vector<std::shared_ptr<torch::nn::Module>>& modules, bool records = false);
  torch::Tensor forward(torch::Tensor x) override { return run_(x); }

 private:
  Run run_;
};

// block.forward(x), checkpointed when `checkpoint` is true and gradients are being recorded.
torch::Tensor checkpointed_forward(BlockImpl& block, const torch::Tensor& x, bool checkpoint);

// Which of `count` blocks are checkpointed: every `every`-th (1: all; 0: none), plus the
// indices listed. Throws ConfigError for an index out of range.
std::vector<bool> checkpoint_plan(std::int64_t count, std::int64_t every, const std::vector<std::int64_t>& listed);

}  // namespace hpctrain
