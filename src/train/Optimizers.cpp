#include "train/Optimizers.hpp"

#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "util/Error.hpp"

namespace hpctrain {
namespace {

// What the free functions of Optimizers.hpp reach through a dynamic_cast.
class DeviceStepped {
 public:
  virtual ~DeviceStepped() = default;
  virtual void skip_next_step_on(const torch::Tensor& found_inf) = 0;
  virtual void read_learning_rate_from_device() = 0;
  virtual void set_learning_rate_tensor(double lr) = 0;
  virtual void synchronize_state() = 0;
};

// Adam/AdamW whose step runs ATen's fused multi-tensor kernel: one launch updates every
// parameter of a group, where LibTorch's loop issues about ten small kernels per parameter
// (thousands per step for a Transformer: launch-bound on a GPU). The per-parameter state is
// LibTorch's own (step, exp_avg, exp_avg_sq), so save/load and checkpoints are those of
// the base class and move freely between the fused and the loop implementation. The kernel
// reads the step count from a tensor on the parameters' device; those tensors are kept
// here and re-made whenever the state's count differs (first step, after a load). Steps
// skipped or replayed on the device advance only those tensors: synchronize_state() writes
// them back into the state before it is saved.
template <class Base, class State, class Options, bool Decoupled>
class FusedAdam final : public Base, public DeviceStepped {
 public:
  using Base::Base;

  void skip_next_step_on(const torch::Tensor& found_inf) override { found_inf_ = found_inf; }

  void read_learning_rate_from_device() override {
    if (lr_.defined()) return;
    for (auto& group : this->param_groups()) {
      if (!group.params().empty()) {
        lr_ = torch::full({}, group.options().get_lr(), group.params().front().options().dtype(torch::kFloat));
        return;
      }
    }
  }

  void set_learning_rate_tensor(double lr) override {
    if (lr_.defined()) lr_.fill_(lr);
  }

  void synchronize_state() override {
    // One copy to the host for all counters (a read per parameter would wait on the GPU
    // hundreds of times per checkpoint).
    std::vector<std::pair<State*, Counter*>> live;
    std::vector<torch::Tensor> devices;
    for (auto& [key, counter] : counters_) {
      auto it = this->state_.find(key);
      if (it == this->state_.end() || !counter.device.defined()) continue;
      live.emplace_back(&static_cast<State&>(*it->second), &counter);
      devices.push_back(counter.device.reshape({1}));
    }
    if (live.empty()) return;
    const auto host = torch::cat(devices).to(torch::TensorOptions().dtype(torch::kDouble).device(torch::kCPU));
    const auto* values = host.data_ptr<double>();
    for (std::size_t i = 0; i < live.size(); ++i) {
      live[i].first->step(static_cast<std::int64_t>(values[i]));
      live[i].second->host = live[i].first->step();
    }
  }

  torch::Tensor step(torch::optim::Optimizer::LossClosure closure = nullptr) override {
    torch::Tensor loss;
    if (closure) {
      torch::AutoGradMode grad(true);
      loss = closure();
    }
    torch::NoGradGuard no_grad;
    for (auto& group : this->param_groups()) {
      auto& o = static_cast<Options&>(group.options());
      if (o.amsgrad()) throw RuntimeFailure("fused Adam/AdamW: amsgrad is not supported");
      std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        void* key = p.unsafeGetTensorImpl();
        auto it = this->state_.find(key);
        if (it == this->state_.end()) {
          auto s = std::make_unique<State>();
          s->step(0);
          s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          it = this->state_.emplace(key, std::move(s)).first;
        }
        auto& s = static_cast<State&>(*it->second);
        auto& counter = counters_[key];
        if (!counter.device.defined() || counter.host != s.step()) {
          counter.device = torch::full({}, static_cast<double>(s.step()), p.options().dtype(torch::kFloat));
        }
        s.step(s.step() + 1);
        counter.host = s.step();
        params.push_back(p);
        grads.push_back(p.grad());
        exp_avgs.push_back(s.exp_avg());
        exp_avg_sqs.push_back(s.exp_avg_sq());
        steps.push_back(counter.device);
      }
      if (params.empty()) continue;
      torch::_foreach_add_(steps, 1);
      const auto [beta1, beta2] = o.betas();
      const std::optional<torch::Tensor> found_inf =
          found_inf_.defined() ? std::optional<torch::Tensor>(found_inf_) : std::nullopt;
      // The rate as a number or, read on the device, as a tensor (the kernel has both forms).
      auto run = [&](const auto& lr) {
        if (Decoupled) {
          torch::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, {}, steps, lr, beta1, beta2, o.weight_decay(),
                               o.eps(), /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, found_inf);
        } else {
          torch::_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, {}, steps, lr, beta1, beta2, o.weight_decay(),
                              o.eps(), /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, found_inf);
        }
      };
      if (lr_.defined()) {
        run(lr_);
      } else {
        run(o.lr());
      }
      // A skipped step does not count: the kernel left the parameters and moments alone.
      if (found_inf)
        torch::_foreach_sub_(steps, std::vector<torch::Tensor>(steps.size(), found_inf->reshape(c10::IntArrayRef{})));
    }
    found_inf_ = torch::Tensor();
    return loss;
  }

 private:
  struct Counter {
    std::int64_t host = -1;  // the state's step count when `device` was last advanced
    torch::Tensor device;
  };
  std::unordered_map<void*, Counter> counters_;
  torch::Tensor found_inf_;  // for the next step only
  torch::Tensor lr_;         // read_learning_rate_from_device: the rate, fp32 on the device (what the kernel reads)
};

using FusedAdamImpl = FusedAdam<torch::optim::Adam, torch::optim::AdamParamState, torch::optim::AdamOptions, false>;
using FusedAdamWImpl = FusedAdam<torch::optim::AdamW, torch::optim::AdamWParamState, torch::optim::AdamWOptions, true>;

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& c, std::vector<torch::Tensor> parameters,
                                                        bool fused) {
  if (c.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        parameters,
        torch::optim::SGDOptions(c.lr).momentum(c.momentum).nesterov(c.nesterov).weight_decay(c.weight_decay));
  }
  if (c.name == "adam") {
    const auto options =
        torch::optim::AdamOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay);
    if (fused) return std::make_unique<FusedAdamImpl>(parameters, options);
    return std::make_unique<torch::optim::Adam>(parameters, options);
  }
  if (c.name == "adamw") {
    const auto options =
        torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay);
    if (fused) return std::make_unique<FusedAdamWImpl>(parameters, options);
    return std::make_unique<torch::optim::AdamW>(parameters, options);
  }
  throw ConfigError("optimizer.name: unknown optimizer \"" + c.name + "\"");
}

bool use_fused_optimizer(const OptimizerConfig& c) {
  // auto: fused on CPUs too, where ATen's CPU kernel took the default CNN's AdamW step from 2.2 ms
  // to 0.8 ms on one core (docs/benchmarks.md, "CPU step").
  return c.fused != "off";
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
  if (auto* fused = dynamic_cast<DeviceStepped*>(&optimizer)) fused->set_learning_rate_tensor(lr);
}

bool is_fused(const torch::optim::Optimizer& optimizer) {
  return dynamic_cast<const DeviceStepped*>(&optimizer) != nullptr;
}

bool skip_next_step_on(torch::optim::Optimizer& optimizer, const torch::Tensor& found_inf) {
  auto* fused = dynamic_cast<DeviceStepped*>(&optimizer);
  if (fused) fused->skip_next_step_on(found_inf);
  return fused != nullptr;
}

bool read_learning_rate_from_device(torch::optim::Optimizer& optimizer) {
  auto* fused = dynamic_cast<DeviceStepped*>(&optimizer);
  if (fused) fused->read_learning_rate_from_device();
  return fused != nullptr;
}

void synchronize_optimizer_state(torch::optim::Optimizer& optimizer) {
  if (auto* fused = dynamic_cast<DeviceStepped*>(&optimizer)) fused->synchronize_state();
}

}  // namespace hpctrain
