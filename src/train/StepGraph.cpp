#include "train/StepGraph.hpp"

#include <ATen/autocast_mode.h>

#include <exception>
#include <stdexcept>
#include <string>

#include "util/Error.hpp"

#if HPCTRAIN_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace hpctrain {

#if HPCTRAIN_WITH_CUDA
struct StepGraph::Impl {
  Impl(const c10::Device& d, int warmup)
      : device(d), warmup_steps(warmup), side(c10::cuda::getStreamFromPool(false, d.index())) {}

  // Work on `side` after what the current stream has queued, and the current stream's
  // later work after `side`'s (torch.cuda.graph's stream discipline).
  void run_on_side(const std::function<void()>& work) {
    const auto current = c10::cuda::getCurrentCUDAStream(device.index());
    at::cuda::CUDAEvent before;
    before.record(current);
    before.block(side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      work();
    }
    at::cuda::CUDAEvent after;
    after.record(side);
    after.block(current);
  }

  void capture(const std::function<void()>& step) {
    // The graph's buffers come from a private pool: start from a quiet device.
    c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
    run_on_side([&] {
      graph = std::make_unique<at::cuda::CUDAGraph>();
      // Casts cached outside the graph would be read by it after they are freed.
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      std::string failure;
      try {
        graph->capture_begin();
        try {
          step();
        } catch (const std::exception& e) {
          failure = e.what();
        }
        graph->capture_end();  // also after a failure: the stream must leave capture mode
      } catch (const std::exception& e) {
        if (failure.empty()) failure = e.what();
      }
      at::autocast::set_autocast_cache_enabled(cache);
      if (!failure.empty()) {
        graph.reset();
        throw RuntimeFailure("device.cuda_graphs: the training step could not be captured as a CUDA graph (" +
                             failure.substr(0, failure.find('\n')) + "); run with device.cuda_graphs=false");
      }
      graph->replay();
    });
  }

  c10::Device device;
  int warmup_steps;
  int eager_steps = 0;
  c10::cuda::CUDAStream side;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
};

StepGraph::StepGraph(const c10::Device& device, int warmup_steps) {
  if (!device.is_cuda()) throw std::logic_error("StepGraph needs a CUDA device");
  impl_ = std::make_unique<Impl>(device, warmup_steps);
}

void StepGraph::run(const std::function<void()>& step) {
  Impl& m = *impl_;
  if (m.graph) {
    m.graph->replay();
  } else if (m.eager_steps < m.warmup_steps) {
    m.run_on_side(step);
    ++m.eager_steps;
  } else {
    m.capture(step);
  }
}

bool StepGraph::captured() const {
  return impl_->graph != nullptr;
}

#else
struct StepGraph::Impl {};

StepGraph::StepGraph(const c10::Device&, int) {
  throw RuntimeFailure("device.cuda_graphs: this build of hpctrain has no CUDA support");
}

void StepGraph::run(const std::function<void()>& step) {
  step();
}

bool StepGraph::captured() const {
  return false;
}
#endif

StepGraph::~StepGraph() = default;

}  // namespace hpctrain
