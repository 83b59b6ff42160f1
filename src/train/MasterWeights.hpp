#pragma once
// precision.params=low: the weights of linear and convolution layers held in the compute
// precision (bf16 or fp16), with fp32 master copies that the gradient reduction and the
// optimizer see in their place.
//
// Under autocast with fp32 weights every forward casts each weight to the low precision
// (reading 4 bytes and writing 2 per weight) and backward casts its gradient back to fp32.
// Here the layers compute with weights that already have the low type, and backward hands
// over low-precision gradients: a hook adds each into its master's fp32 gradient (so
// accumulation over microbatches, the reduction, clipping and the step stay fp32), drops it,
// and fires the master's own post-accumulate hook (the gradient reducer's), as if autograd
// had accumulated into the master. A master without a gradient gets a fresh fp32 copy, or,
// when it has a hook (the reducer of sharded stage 2, which adds it into an fp32 bucket and
// drops it), the low-precision gradient itself. After each optimizer step update_model() rounds the
// masters into the weights. Biases, normalization scales and embeddings stay fp32 parameters
// (under autocast as before): they are small, and an fp32 embedding keeps the residual
// stream fp32 exactly as the fp32-weight path has it.
//
// Checkpoints hold the masters: inside an Exposed scope the converted parameters are the
// masters (the same storage, fp32), so whatever saves, restores, broadcasts or copies the
// model's parameters reads and writes the masters; afterwards every parameter has its own
// low-precision storage back (captured CUDA graphs stay valid).
#include <torch/torch.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace hpctrain {

class MasterWeights {
 public:
  // Converts the weights of `model`'s Linear and Conv1d/2d modules that are among `trained`
  // to `compute` (kBFloat16 or kHalf).
  MasterWeights(torch::nn::Module& model, const std::vector<torch::Tensor>& trained, torch::ScalarType compute);
  ~MasterWeights();  // removes the hooks
  MasterWeights(const MasterWeights&) = delete;
  MasterWeights& operator=(const MasterWeights&) = delete;

  // Parallel to `trained`: each converted weight's fp32 master, every other parameter itself.
  const std::vector<torch::Tensor>& masters() const { return masters_; }
  // `parameters` (any of the model's) with each converted weight replaced by its master: what
  // the reducer and the optimizer know them as.
  std::vector<torch::Tensor> substitute(const std::vector<torch::Tensor>& parameters) const;
  std::size_t converted() const { return pairs_.size(); }
  std::int64_t compute_bytes() const;  // the low-precision weights (beside the masters)
  torch::ScalarType compute_type() const { return compute_; }

  // After an optimizer step: every converted weight from its master (rounded, on the device).
  void update_model();

  // For its lifetime the converted parameters hold their masters (fp32, shared storage), and
  // `optimizer`'s state (kept per parameter, under the masters) is filed under the parameters,
  // where checkpoints look for it. `write_back`: at its end the weights are rounded from the
  // masters, which a restore or a broadcast may have written. Scopes nest: the outermost swaps
  // the storage back (and writes back if any asked), the first with an optimizer files its state.
  // A null `weights` does nothing.
  class Exposed {
   public:
    Exposed(MasterWeights* weights, bool write_back, torch::optim::Optimizer* optimizer = nullptr);
    ~Exposed();
    Exposed(const Exposed&) = delete;
    Exposed& operator=(const Exposed&) = delete;

   private:
    MasterWeights* weights_;
    bool outermost_ = false, filed_ = false;
  };

  void gradient_arrived(std::size_t pair);  // the hook of converted weight `pair`
  // Moves each converted parameter's optimizer state from its master's key to its own (where a
  // checkpoint looks), or back.
  void file_state(torch::optim::Optimizer& optimizer, bool under_weights) const;

 private:
  struct Pair {
    torch::Tensor weight;  // the model's parameter, in the compute type
    torch::Tensor master;  // fp32
  };
  std::vector<Pair> pairs_;
  std::unordered_map<const void*, std::size_t> pair_of_;  // weight's TensorImpl -> its pair (substitute runs per step)
  std::vector<torch::Tensor> masters_;
  torch::ScalarType compute_;
  // Exposed: the scopes open, the weights' own storage meanwhile, whether one asked to write
  // back, and the optimizer whose state is filed under the weights.
  int exposed_depth_ = 0;
  std::vector<torch::Tensor> saved_;
  bool write_back_ = false;
  torch::optim::Optimizer* filed_ = nullptr;
};

}  // namespace hpctrain
