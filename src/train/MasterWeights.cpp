#include "train/MasterWeights.hpp"

#include <torch/csrc/autograd/variable.h>

#include <memory>
#include <stdexcept>
#include <unordered_set>

#include "train/Optimizers.hpp"

namespace hpctrain {
namespace {

struct ToMaster : torch::autograd::PostAccumulateGradHook {
  ToMaster(MasterWeights* weights, std::size_t pair) : weights_(weights), pair_(pair) {}
  void operator()(const torch::autograd::Variable& /*weight*/) override { weights_->gradient_arrived(pair_); }
  MasterWeights* weights_;
  std::size_t pair_;
};

// The GEMM operands: the weights of linear and convolution layers.
std::unordered_set<const void*> gemm_weights(torch::nn::Module& model) {
  std::unordered_set<const void*> weights;
  auto add = [&](torch::nn::Module& module) {
    torch::Tensor w;
    if (auto* linear = module.as<torch::nn::Linear>()) w = linear->weight;
    if (auto* conv = module.as<torch::nn::Conv2d>()) w = conv->weight;
    if (auto* conv = module.as<torch::nn::Conv1d>()) w = conv->weight;
    if (w.defined()) weights.insert(w.unsafeGetTensorImpl());
  };
  add(model);  // (modules(true) would need the model held by a shared_ptr)
  for (const auto& module : model.modules(/*include_self=*/false)) add(*module);
  return weights;
}

}  // namespace

MasterWeights::MasterWeights(torch::nn::Module& model, const std::vector<torch::Tensor>& trained,
                             torch::ScalarType compute)
    : compute_(compute) {
  if (compute != torch::kBFloat16 && compute != torch::kHalf) {
    throw std::logic_error("MasterWeights: the compute type is bf16 or fp16");
  }
  const auto weights = gemm_weights(model);
  torch::NoGradGuard no_grad;
  for (const auto& p : trained) {
    if (!p.requires_grad() || p.scalar_type() != torch::kFloat || weights.count(p.unsafeGetTensorImpl()) == 0) {
      masters_.push_back(p);
      continue;
    }
    // The master keeps the weight's values and layout (channels-last convolutions included);
    // it is a leaf that requires a gradient, so the reducer and the optimizer take it as a parameter.
    auto master = p.detach().clone(torch::MemoryFormat::Preserve).requires_grad_(true);
    p.set_data(p.detach().to(compute));
    pairs_.push_back(Pair{p, master});
    masters_.push_back(master);
  }
  // After the vector is complete: the hooks and pair_of_ keep indices into it.
  for (std::size_t i = 0; i < pairs_.size(); ++i) {
    pair_of_.emplace(pairs_[i].weight.unsafeGetTensorImpl(), i);
    torch::autograd::impl::set_post_acc_grad_hooks(pairs_[i].weight, std::make_unique<ToMaster>(this, i));
  }
}

MasterWeights::~MasterWeights() {
  for (auto& pair : pairs_) torch::autograd::impl::set_post_acc_grad_hooks(pair.weight, nullptr);
}

std::vector<torch::Tensor> MasterWeights::substitute(const std::vector<torch::Tensor>& parameters) const {
  std::vector<torch::Tensor> out = parameters;
  for (auto& p : out) {
    const auto it = pair_of_.find(p.unsafeGetTensorImpl());
    if (it != pair_of_.end()) p = pairs_[it->second].master;
  }
  return out;
}

std::int64_t MasterWeights::compute_bytes() const {
  std::int64_t bytes = 0;
  for (const auto& pair : pairs_) bytes += pair.weight.numel() * static_cast<std::int64_t>(pair.weight.element_size());
  return bytes;
}

void MasterWeights::gradient_arrived(std::size_t index) {
  Pair& pair = pairs_[index];
  const torch::Tensor gradient = pair.weight.grad();
  if (!gradient.defined()) return;
  auto& hook = torch::autograd::impl::post_acc_grad_hooks(pair.master);
  {
    torch::NoGradGuard no_grad;
    torch::Tensor& into = pair.master.mutable_grad();
    if (into.defined()) {
      into.add_(gradient);  // the reducer's bucket view (fp32)
    } else if (hook) {
      // Sharded stage 2: the reducer's hook adds the master's gradient into its bucket and drops
      // it; it takes the low-precision one as it is (no fp32 copy to allocate and drop).
      into = gradient;
    } else {
      // One rank without buckets: autograd's rule, a fresh fp32 tensor each step (inside a
      // CUDA graph's capture, from its pool), which the optimizer reads.
      into = gradient.to(torch::kFloat);
    }
    pair.weight.mutable_grad().reset();
  }
  if (hook) (*hook)(pair.master);
}

void MasterWeights::update_model() {
  if (pairs_.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> weights, masters;
  for (const auto& pair : pairs_) {
    weights.push_back(pair.weight);
    masters.push_back(pair.master);
  }
  torch::_foreach_copy_(weights, masters);
}

void MasterWeights::file_state(torch::optim::Optimizer& optimizer, bool under_weights) const {
  auto& state = optimizer.state();
  for (const auto& pair : pairs_) {
    void* from = (under_weights ? pair.master : pair.weight).unsafeGetTensorImpl();
    void* to = (under_weights ? pair.weight : pair.master).unsafeGetTensorImpl();
    state.erase(to);
    auto it = state.find(from);
    if (it == state.end()) continue;  // no step yet, or a restore without state for it
    auto moved = std::move(it->second);
    state.erase(it);
    state[to] = std::move(moved);
  }
}

MasterWeights::Exposed::Exposed(MasterWeights* weights, bool write_back, torch::optim::Optimizer* optimizer)
    : weights_(weights) {
  if (weights_ == nullptr) return;
  MasterWeights& w = *weights_;
  outermost_ = w.exposed_depth_++ == 0;
  w.write_back_ = w.write_back_ || write_back;
  if (outermost_) {
    for (auto& pair : w.pairs_) {
      w.saved_.push_back(pair.weight.detach());
      pair.weight.set_data(pair.master.detach());
    }
  }
  if (optimizer != nullptr && w.filed_ == nullptr) {
    // The fused optimizer's step counts on the device into the state first: it finds its
    // state under the masters only.
    synchronize_optimizer_state(*optimizer);
    w.file_state(*optimizer, /*under_weights=*/true);
    w.filed_ = optimizer;
    filed_ = true;
  }
}

MasterWeights::Exposed::~Exposed() {
  if (weights_ == nullptr) return;
  MasterWeights& w = *weights_;
  if (filed_) {
    w.file_state(*w.filed_, /*under_weights=*/false);
    w.filed_ = nullptr;
  }
  --w.exposed_depth_;
  if (!outermost_) return;
  for (std::size_t i = 0; i < w.saved_.size(); ++i) w.pairs_[i].weight.set_data(w.saved_[i]);
  w.saved_.clear();
  if (w.write_back_) w.update_model();
  w.write_back_ = false;
}

}  // namespace hpctrain
