#pragma once
// Gradients fused into flat buckets. Each parameter's .grad is a view into one bucket, so
// backward accumulates straight into the buffers that are reduced: one allreduce per
// bucket, no copies. Buckets follow the reverse of registration (forward) order, the
// order in which backward produces gradients.
#include <torch/torch.h>

#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

class GradientBuckets {
 public:
  GradientBuckets(std::vector<torch::Tensor> parameters, double bucket_mb);

  // Zeroes every bucket (replaces optimizer.zero_grad(), which would drop the views).
  void zero();
  // Sums the buckets over `comm` in place. Gradients must already be scaled so that the
  // sum is the wanted average (the loss is divided by the global batch size).
  void allreduce_sum(const Communicator& comm);
  // L2 norm over all gradients (identical on every rank after allreduce_sum).
  double global_norm() const;
  void scale(double factor);

  std::size_t bucket_count() const { return buckets_.size(); }
  std::int64_t element_count() const;
  const std::vector<torch::Tensor>& buckets() const { return buckets_; }

 private:
  // Re-attaches any gradient autograd replaced instead of accumulating in place.
  void ensure_views();
  struct Slot {
    torch::Tensor parameter;
    torch::Tensor view;
  };
  std::vector<torch::Tensor> buckets_;
  std::vector<Slot> slots_;
};

// Copies rank `root`'s parameters and buffers to every rank of `comm` (one fused broadcast).
void broadcast_module_state(torch::nn::Module& module, const Communicator& comm, int root);

}  // namespace hpctrain
