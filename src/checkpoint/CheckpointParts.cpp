#include "checkpoint/CheckpointParts.hpp"

#include <cstdint>
#include <cstring>
#include <memory>

#include "util/Error.hpp"

namespace hpctrain {
namespace {

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

class Reader {
 public:
  Reader(const std::string& bytes, const std::string& context) : bytes_(bytes), context_(context) {}
  bool done() const { return at_ == bytes_.size(); }
  const char* take(std::size_t n) {
    if (n > bytes_.size() - at_) throw RuntimeFailure(context_ + ": truncated checkpoint part");
    const char* p = bytes_.data() + at_;
    at_ += n;
    return p;
  }
  template <class T>
  T get() {
    T value;
    std::memcpy(&value, take(sizeof(T)), sizeof(T));
    return value;
  }

 private:
  const std::string& bytes_;
  const std::string& context_;
  std::size_t at_ = 0;
};

}  // namespace

std::string pack_parts(const CheckpointParts& parts) {
  std::string out;
  for (const auto& [name, value] : parts) {
    const torch::Tensor t = value.detach().contiguous().cpu();
    put<std::uint32_t>(out, static_cast<std::uint32_t>(name.size()));
    out.append(name);
    put<std::int32_t>(out, static_cast<std::int32_t>(t.scalar_type()));
    put<std::uint32_t>(out, static_cast<std::uint32_t>(t.dim()));
    for (auto d : t.sizes()) put<std::int64_t>(out, d);
    out.append(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel() * t.element_size()));
  }
  return out;
}

CheckpointParts unpack_parts(const std::string& bytes, const std::string& context) {
  CheckpointParts parts;
  Reader in(bytes, context);
  while (!in.done()) {
    const auto length = in.get<std::uint32_t>();
    std::string name(in.take(length), length);
    const auto type = static_cast<torch::ScalarType>(in.get<std::int32_t>());
    std::vector<std::int64_t> shape(in.get<std::uint32_t>());
    for (auto& d : shape) d = in.get<std::int64_t>();
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type));
    const auto size = static_cast<std::size_t>(t.numel() * t.element_size());
    if (size > 0) std::memcpy(t.data_ptr(), in.take(size), size);
    parts.emplace(std::move(name), std::move(t));
  }
  return parts;
}

const std::vector<std::string>& optimizer_state_keys() {
  static const std::vector<std::string> keys{"momentum_buffer", "step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return keys;
}

std::vector<std::pair<std::string, torch::Tensor>> optimizer_tensors(torch::optim::Optimizer& optimizer,
                                                                     const torch::Tensor& p) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto& state = optimizer.state();
  auto it = state.find(p.unsafeGetTensorImpl());
  if (it == state.end()) return out;
  if (auto* s = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
    out.emplace_back("momentum_buffer", s->momentum_buffer());
  } else if (auto* a = dynamic_cast<torch::optim::AdamParamState*>(it->second.get())) {
    out.emplace_back("step", torch::tensor({a->step()}, torch::kLong));
    out.emplace_back("exp_avg", a->exp_avg());
    out.emplace_back("exp_avg_sq", a->exp_avg_sq());
    if (a->max_exp_avg_sq().defined()) out.emplace_back("max_exp_avg_sq", a->max_exp_avg_sq());
  } else if (auto* w = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get())) {
    out.emplace_back("step", torch::tensor({w->step()}, torch::kLong));
    out.emplace_back("exp_avg", w->exp_avg());
    out.emplace_back("exp_avg_sq", w->exp_avg_sq());
    if (w->max_exp_avg_sq().defined()) out.emplace_back("max_exp_avg_sq", w->max_exp_avg_sq());
  } else {
    throw RuntimeFailure("checkpoint: unsupported optimizer state");
  }
  return out;
}

namespace {

template <class State>
std::unique_ptr<State> adam_state(const std::map<std::string, torch::Tensor>& values, const std::string& context) {
  auto get = [&](const std::string& key) {
    auto it = values.find(key);
    if (it == values.end()) throw DataError(context + ": optimizer state lacks " + key);
    return it->second;
  };
  auto s = std::make_unique<State>();
  s->step(get("step").template item<std::int64_t>());
  s->exp_avg(get("exp_avg"));
  s->exp_avg_sq(get("exp_avg_sq"));
  if (auto it = values.find("max_exp_avg_sq"); it != values.end()) s->max_exp_avg_sq(it->second);
  return s;
}

}  // namespace

void set_optimizer_tensors(torch::optim::Optimizer& optimizer, const torch::Tensor& p,
                           const std::map<std::string, torch::Tensor>& values, const std::string& context) {
  auto& state = optimizer.state();
  if (values.empty()) {
    state.erase(p.unsafeGetTensorImpl());
    return;
  }
  if (dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr) {
    auto it = values.find("momentum_buffer");
    if (it == values.end()) throw DataError(context + ": optimizer state lacks momentum_buffer");
    auto s = std::make_unique<torch::optim::SGDParamState>();
    s->momentum_buffer(it->second);
    state[p.unsafeGetTensorImpl()] = std::move(s);
  } else if (dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr) {
    state[p.unsafeGetTensorImpl()] = adam_state<torch::optim::AdamParamState>(values, context);
  } else if (dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr) {
    state[p.unsafeGetTensorImpl()] = adam_state<torch::optim::AdamWParamState>(values, context);
  } else {
    throw RuntimeFailure("checkpoint: unsupported optimizer");
  }
}

}  // namespace hpctrain
