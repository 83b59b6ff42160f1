#pragma once
// One training step captured as a CUDA graph and replayed with one launch per step
// (device.cuda_graphs). A small model's step on a GPU is a few hundred short kernels whose
// launches cost more than their work; a graph launches them all at once, and the CPU is free
// to prepare the next batch.
//
// The step must read and write only tensors that live across steps (inputs copied into
// fixed buffers, parameters, gradients, optimizer and loss-scale state, accumulators) and
// must not wait for the GPU: the fused optimizer with its rate and step counts on the device,
// and fp16 loss scaling decided on the device, give that (train/Optimizers.hpp,
// train/MixedPrecision.hpp). Host code in the step runs only during warm-up and capture.
#include <c10/core/Device.h>

#include <functional>
#include <memory>

namespace hpctrain {

class StepGraph {
 public:
  // `warmup_steps` eager steps before the capture: cuBLAS and cuDNN handles, workspaces and
  // the optimizer's state are made by then, outside the graph.
  StepGraph(const c10::Device& device, int warmup_steps);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Runs one step: during warm-up `step` eagerly on a side stream, then its capture (which
  // is then replayed once), afterwards a replay of the capture on the current stream.
  // Throws RuntimeFailure naming device.cuda_graphs when the capture fails.
  void run(const std::function<void()>& step);
  bool captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hpctrain
