#include "models/CounterDropout.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>

#include "models/DropoutKernels.hpp"

namespace hpctrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::uint32_t threshold_of(double p) {
  return static_cast<std::uint32_t>(std::min(std::ldexp(p, 32), 4294967295.0));
}

// in (contiguous float or bfloat16) masked and scaled into a new tensor, over LibTorch's intra-op
// threads.
torch::Tensor masked(const torch::Tensor& in, std::uint64_t seed, double p) {
  auto out = torch::empty_like(in, torch::MemoryFormat::Contiguous);
  const auto threshold = threshold_of(p);
  const auto scale = static_cast<float>(1.0 / (1.0 - p));
  const auto run = [&](const auto* src, auto* dst) {
    at::parallel_for(0, in.numel(), 1 << 15, [&](std::int64_t begin, std::int64_t end) {
      kernels::apply_dropout_mask(src, begin, end, seed, threshold, scale, dst);
    });
  };
  if (in.scalar_type() == torch::kBFloat16) {
    run(reinterpret_cast<const std::uint16_t*>(in.data_ptr<at::BFloat16>()),
        reinterpret_cast<std::uint16_t*>(out.data_ptr<at::BFloat16>()));
  } else {
    run(in.data_ptr<float>(), out.data_ptr<float>());
  }
  return out;
}

struct Apply : torch::autograd::Function<Apply> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, double p, std::int64_t seed) {
    RECORD_FUNCTION("hpctrain::counter_dropout", std::vector<c10::IValue>({x}));
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["dtype"] = x.scalar_type();
    return masked(x.contiguous(), static_cast<std::uint64_t>(seed), p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("hpctrain::counter_dropout_backward", std::vector<c10::IValue>({grads[0]}));
    const auto seed = static_cast<std::uint64_t>(ctx->saved_data["seed"].toInt());
    return {masked(grads[0].to(ctx->saved_data["dtype"].toScalarType()).contiguous(), seed,
                   ctx->saved_data["p"].toDouble()),
            torch::Tensor(), torch::Tensor()};
  }
};

std::uint64_t next_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get<at::CPUGeneratorImpl>()->random64();
}

}  // namespace

torch::Tensor counter_dropout(const torch::Tensor& x, double p, std::uint64_t seed) {
  TORCH_CHECK(p >= 0 && p < 1, "counter_dropout: p must be in [0, 1), got ", p);
  return Apply::apply(x, p, static_cast<std::int64_t>(seed));
}

torch::Tensor CounterDropoutImpl::forward(const torch::Tensor& x) {
  if (!is_training() || p_ <= 0) return x;
  const auto dtype = x.scalar_type();
  // Strided inputs are masked in their contiguous copy (the output is contiguous); channels-last
  // ones keep their layout through LibTorch's dropout rather than be converted back.
  const bool channels_last = !x.is_contiguous() && x.is_contiguous(torch::MemoryFormat::ChannelsLast);
  if (fused_ && p_ < 1 && x.device().is_cpu() && (dtype == torch::kFloat || dtype == torch::kBFloat16) &&
      !channels_last) {
    return counter_dropout(x, p_, next_seed());
  }
  return torch::dropout(x, p_, true);
}

}  // namespace hpctrain
