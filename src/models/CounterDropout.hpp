#pragma once
// Dropout whose mask comes from a counter-based generator on CPUs (model.fused_kernels).
//
// LibTorch's CPU dropout draws one Bernoulli variate per element from the mt19937 generator,
// one after the other, into a float mask that it multiplies in and keeps for the backward:
// in the Transformer family that was a quarter of the forward (docs/benchmarks.md, "CPU
// step"). Here one 64-bit seed is drawn from LibTorch's CPU generator per call (so runs stay
// deterministic given train.seed, gradient checkpointing's recomputation draws the same seed,
// and the draws happen in the order the layers run), and whether element i is kept is a hash of
// (seed, i) (models/DropoutKernels.hpp): vectorized, spread over threads, and regenerated in the
// backward instead of stored. Each element is kept with probability 1 - p and scaled by
// 1 / (1 - p), as LibTorch's dropout; the masks are other draws than LibTorch's, so a run's
// numbers differ from one with model.fused_kernels=false as one seed's differ from another's.
// A non-contiguous input is masked in its contiguous copy's element order (the output is that
// copy's shape, contiguous). float32 and bfloat16 (the kept value scaled in float, then rounded).
// Elsewhere (GPUs, other dtypes, channels-last inputs, fused_kernels=false) it
// is torch::dropout; in evaluation the identity.
#include <torch/torch.h>

namespace hpctrain {

struct CounterDropoutImpl : torch::nn::Module {
  CounterDropoutImpl(double p, bool fused) : p_(p), fused_(fused) {}
  torch::Tensor forward(const torch::Tensor& x);
  double p() const { return p_; }

 private:
  double p_;
  bool fused_;
};
TORCH_MODULE(CounterDropout);

// x with each element kept with probability 1 - p and scaled by 1 / (1 - p): a CPU float32 or
// bfloat16 tensor, recorded for autograd; `seed` fixes the mask.
torch::Tensor counter_dropout(const torch::Tensor& x, double p, std::uint64_t seed);

}  // namespace hpctrain
