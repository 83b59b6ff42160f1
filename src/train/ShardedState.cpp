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

// Each parameter's index in module order, by its tensor.
std::map<const void*, std::size_t> module_index(const std::vector<torch::Tensor>& model) {
  std::map<const void*, std::size_t> index;
  for (std::size_t i = 0; i < model.size(); ++i) index[model[i].unsafeGetTensorImpl()] = i;
  return index;
}

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

ShardedCheckpointState sharded_checkpoint_state(const GradientReducer& reducer, torch::optim::Optimizer& shards,
                                                const std::vector<torch::Tensor>& model, const std::vector<bool>& held,
                                                const Communicator& data) {
  torch::NoGradGuard no_grad;
  const bool root = data.rank() == 0;
  auto on_host = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat).contiguous(); };
  const auto index = module_index(model);
  ShardedCheckpointState out;
  std::vector<bool> covered(model.size(), false);
  for (const auto& shard : reducer.shard_buckets()) {
    std::map<std::string, torch::Tensor> chunk;  // this rank's chunk of each state
    std::int64_t step = -1;
    for (const auto& [key, t] : optimizer_tensors(shards, shard.parameters)) {
      if (key == "step") step = t.item<std::int64_t>();
      if (key != "step") chunk[key] = on_host(t);
    }
    std::vector<std::string> keys;
    for (const auto& key : optimizer_state_keys()) {
      if (chunk.count(key)) keys.push_back(key);
    }
    // A member stored in another order than C order: whole on the first rank, its state gathered there.
    const bool reordered =
        std::any_of(shard.members.begin(), shard.members.end(), [](const auto& m) { return !m.first.is_contiguous(); });
    std::map<std::string, torch::Tensor> whole;
    for (const auto& [key, mine] : reordered ? chunk : std::map<std::string, torch::Tensor>{}) {
      torch::Tensor all = root ? torch::empty({shard.chunk * data.size()}, torch::kFloat) : torch::Tensor();
      data.gather(mine.data_ptr<float>(), root ? all.data_ptr<float>() : nullptr, static_cast<std::size_t>(shard.chunk),
                  0);
      if (root) whole[key] = all;
    }
    const std::int64_t lo = shard.offset, hi = shard.offset + shard.chunk;
    for (const auto& [p, offset] : shard.members) {
      const std::size_t i = index.at(p.unsafeGetTensorImpl());
      covered[i] = true;
      out.state_keys[i] = keys;
      if (step >= 0) out.steps[i] = step;
      if (!p.is_contiguous()) {
        if (!root) continue;
        out.slices.push_back({i, "", 0, on_host(p).reshape(-1)});
        for (const auto& [key, all] : whole) {
          out.slices.push_back({i, key, 0, member_view(all, p, offset).contiguous().reshape(-1)});
        }
        continue;
      }
      // Elements [a, b) of the bucket are this rank's: the same of the parameter and of its state.
      const std::int64_t a = std::max(lo, offset), b = std::min(hi, offset + p.numel());
      if (a >= b) continue;
      out.slices.push_back({i, "", a - offset, on_host(p.reshape(-1).narrow(0, a - offset, b - a))});
      for (const auto& [key, mine] : chunk) out.slices.push_back({i, key, a - offset, mine.narrow(0, a - lo, b - a)});
    }
  }
  // Parameters outside the buckets (not trained): whole, from the first rank, without state.
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (covered[i] || !(held.empty() || held[i])) continue;
    out.state_keys[i] = {};
    if (root) out.slices.push_back({i, "", 0, on_host(model[i]).reshape(-1)});
  }
  return out;
}

void read_sharded_state(const GradientReducer& reducer, torch::optim::Optimizer& shards, const CheckpointReader& file,
                        const std::vector<torch::Tensor>& model) {
  torch::NoGradGuard no_grad;
  const auto index = module_index(model);
  const auto host = torch::TensorOptions().dtype(torch::kFloat);
  for (const auto& shard : reducer.shard_buckets()) {
    std::map<std::string, torch::Tensor> values;                // this rank's chunk of each state
    std::vector<std::pair<std::int64_t, std::int64_t>> filled;  // ranges of the chunk read
    std::int64_t step = -1;
    const std::int64_t lo = shard.offset, hi = shard.offset + shard.chunk;
    for (const auto& [p, offset] : shard.members) {
      const std::size_t i = index.at(p.unsafeGetTensorImpl());
      const std::int64_t a = std::max(lo, offset), b = std::min(hi, offset + p.numel());
      if (a >= b) continue;
      step = std::max(step, file.step(i));
      filled.emplace_back(a - lo, b - lo);
      for (const auto& key : optimizer_state_keys()) {
        if (key == "step") continue;
        auto& chunk = values[key];
        if (!chunk.defined()) chunk = torch::empty({shard.chunk}, host);
        torch::Tensor part = chunk.narrow(0, a - lo, b - a);  // read in place
        bool present = false;
        if (p.is_contiguous()) {
          present = file.read(i, key, a - offset, part);
        } else {
          // Stored in C order, held in the parameter's memory order: the whole state, reordered.
          torch::Tensor whole = torch::empty({p.numel()}, host);
          present = file.read(i, key, 0, whole);
          auto held = torch::empty_strided(p.sizes(), p.strides(), host);
          if (present) held.copy_(whole.view(p.sizes()));
          if (present) part.copy_(held.as_strided({p.numel()}, {1}).narrow(0, a - offset, b - a));
        }
        if (!present) values.erase(key);  // no state yet (before the first step)
      }
    }
    // What no member covers (the padding past the parameters) is zero, as the optimizer keeps it.
    std::sort(filled.begin(), filled.end());
    std::int64_t at = 0;
    filled.emplace_back(shard.chunk, shard.chunk);
    for (const auto& [begin, end] : filled) {
      for (auto& [key, chunk] : values) {
        if (begin > at) chunk.narrow(0, at, begin - at).zero_();
      }
      at = std::max(at, end);
    }
    for (auto& [key, chunk] : values) chunk = chunk.to(shard.parameters.device());
    if (step >= 0 && !values.empty()) values["step"] = torch::tensor({step}, torch::kLong);
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
