#include "train/ShardedState.hpp"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>

#include "checkpoint/CheckpointParts.hpp"
#include "train/Optimizers.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// A parameter's part of a flat buffer, with the parameter's shape and strides.
torch::Tensor member_view(const torch::Tensor& flat, const torch::Tensor& p, std::int64_t offset) {
  return flat.narrow(0, offset, p.numel()).as_strided(p.sizes(), p.strides());
}

struct WindowHooks : PieceHooks {
  WindowHooks(ParameterWindow& w, std::int64_t n) : window(w), pieces(n) {}
  void before_forward(std::int64_t piece) override {
    window.gather(piece);
    if (piece + 1 < pieces) window.prefetch(piece + 1);
  }
  void after_forward(std::int64_t piece) override {
    if (!(torch::GradMode::is_enabled() && piece + 1 == pieces)) window.free(piece);
  }
  void before_backward(std::int64_t piece) override {
    window.gather(piece);
    if (piece > 0) window.prefetch(piece - 1);
  }
  ParameterWindow& window;
  std::int64_t pieces;
};

}  // namespace

std::vector<std::int64_t> piece_groups(const ModelImpl& model, const std::vector<torch::Tensor>& trained) {
  const auto all = model.parameters();
  const auto pieces = model.parameter_pieces();
  std::vector<std::int64_t> groups;
  for (const auto& p : trained) {
    const auto it = std::find_if(all.begin(), all.end(), [&](const torch::Tensor& q) {
      return q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
    });
    if (it == all.end()) throw std::logic_error("piece_groups: a trained parameter is not the model's");
    groups.push_back(pieces[static_cast<std::size_t>(it - all.begin())]);
  }
  return groups;
}

std::shared_ptr<PieceHooks> window_hooks(ParameterWindow& window, std::int64_t pieces) {
  return std::make_shared<WindowHooks>(window, pieces);
}

void match_window_gathers(ModelImpl& model, const ParameterWindow* window, const Communicator& data, std::int64_t rows,
                          std::int64_t batch) {
  if (window == nullptr || data.size() == 1) return;
  const std::int64_t mine = (rows + batch - 1) / batch;
  double most = static_cast<double>(mine);
  data.allreduce_max(&most, 1);
  for (auto k = mine; k < static_cast<std::int64_t>(most); ++k) model.run_hooks_only();
}

std::vector<torch::Tensor> sharded_parameters(const GradientReducer& reducer) {
  std::vector<torch::Tensor> out;
  for (const auto& shard : reducer.shard_buckets()) {
    for (const auto& member : shard.members) out.push_back(member.first);
  }
  return out;
}

std::unique_ptr<torch::optim::Optimizer> gather_sharded_state(const GradientReducer& reducer,
                                                              torch::optim::Optimizer& shards,
                                                              const OptimizerConfig& config, const Communicator& data) {
  torch::NoGradGuard no_grad;
  const bool root = data.rank() == 0;
  std::unique_ptr<torch::optim::Optimizer> whole;
  if (root) whole = make_optimizer(config, sharded_parameters(reducer));
  for (const auto& shard : reducer.shard_buckets()) {
    // Every rank has stepped its chunk as often as the others: the same keys everywhere.
    std::map<std::string, torch::Tensor> full;
    std::int64_t step = -1;
    for (const auto& [key, t] : optimizer_tensors(shards, shard.parameters)) {
      if (key == "step") {
        step = t.item<std::int64_t>();
        continue;
      }
      if (t.numel() != shard.chunk) throw std::logic_error("sharded optimizer state: " + key + " is not a chunk");
      const auto mine = t.to(torch::kCPU, torch::kFloat).contiguous();
      torch::Tensor all = root ? torch::empty({shard.chunk * data.size()}, torch::kFloat) : torch::Tensor();
      data.gather(mine.data_ptr<float>(), root ? all.data_ptr<float>() : nullptr, static_cast<std::size_t>(shard.chunk),
                  0);
      if (root) full[key] = all;
    }
    if (!root) continue;
    for (const auto& [p, offset] : shard.members) {
      std::map<std::string, torch::Tensor> values;
      for (const auto& [key, all] : full) {
        values[key] = member_view(all, p, offset).clone(torch::MemoryFormat::Preserve).to(p.device());
      }
      if (step >= 0) values["step"] = torch::tensor({step}, torch::kLong);
      set_optimizer_tensors(*whole, p, values, "sharded optimizer state");
    }
  }
  return whole;
}

void scatter_sharded_state(const GradientReducer& reducer, torch::optim::Optimizer& whole,
                           torch::optim::Optimizer& shards) {
  torch::NoGradGuard no_grad;
  for (const auto& shard : reducer.shard_buckets()) {
    const std::int64_t start = shard.offset;
    std::map<std::string, torch::Tensor> full;
    std::map<std::string, torch::Tensor> values;
    for (const auto& [p, offset] : shard.members) {
      for (const auto& [key, t] : optimizer_tensors(whole, p)) {
        if (key == "step") {
          values["step"] = t.clone();
          continue;
        }
        auto& flat = full[key];
        if (!flat.defined()) flat = torch::zeros({shard.flat.numel()}, shard.flat.options());
        member_view(flat, p, offset).copy_(t);
      }
    }
    for (const auto& [key, flat] : full) values[key] = flat.narrow(0, start, shard.chunk).clone();
    set_optimizer_tensors(shards, shard.parameters, values, "sharded optimizer state");
  }
}

std::int64_t optimizer_state_bytes(torch::optim::Optimizer& optimizer) {
  std::int64_t bytes = 0;
  for (auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) {
      for (const auto& [key, t] : optimizer_tensors(optimizer, p)) {
        if (key != "step") bytes += t.numel() * t.element_size();
      }
    }
  }
  return bytes;
}

}  // namespace hpctrain
