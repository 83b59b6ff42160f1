#include "models/Attention.hpp"

#include <ATen/SDPBackend.h>

#include <atomic>
#include <mutex>

#include "util/Error.hpp"

namespace hpctrain {
namespace {

std::string chosen = "auto";
std::mutex record_mutex;
std::atomic<bool> recorded{false};
std::string used;

template <typename Name>
void record(Name name) {
  std::lock_guard<std::mutex> lock(record_mutex);
  if (recorded) return;
  used = name();
  recorded = true;
}

const char* backend_name(std::int64_t backend) {
  switch (static_cast<at::SDPBackend>(backend)) {
    case at::SDPBackend::math:
      return "math";
    case at::SDPBackend::flash_attention:
      return "flash";
    case at::SDPBackend::efficient_attention:
      return "efficient";
    case at::SDPBackend::cudnn_attention:
      return "cudnn";
    case at::SDPBackend::overrideable:
      return "overrideable";
    default:
      return "none";
  }
}

}  // namespace

void choose_attention_backend(const std::string& choice, bool gpu) {
  if (!gpu && (choice == "efficient" || choice == "cudnn")) {
    throw ConfigError("device.attention=" + choice +
                      ": LibTorch has this attention kernel on GPUs only; this run trains on the CPU (use auto, flash "
                      "or math)");
  }
  {
    std::lock_guard<std::mutex> lock(record_mutex);
    recorded = false;
    used.clear();
  }
  chosen = choice;
  // LibTorch's own flags as the process started: auto restores them (a search may run trials
  // with different choices in one process).
  auto& context = at::globalContext();
  static const bool flash = context.userEnabledFlashSDP(), efficient = context.userEnabledMemEfficientSDP(),
                    cudnn = context.userEnabledCuDNNSDP(), math = context.userEnabledMathSDP();
  const bool any = choice == "auto";
  context.setSDPUseFlash(any ? flash : choice == "flash");
  context.setSDPUseMemEfficient(any ? efficient : choice == "efficient");
  context.setSDPUseCuDNN(any ? cudnn : choice == "cudnn");
  context.setSDPUseMath(any ? math : choice == "math");
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double dropout,
                        bool causal) {
  try {
    if (torch::GradMode::is_enabled() && !recorded) {
      record([&] { return backend_name(at::_fused_sdp_choice(q, k, v, {}, dropout, causal)); });
    }
    return torch::scaled_dot_product_attention(q, k, v, {}, dropout, causal);
  } catch (const c10::Error& e) {
    // Only LibTorch's refusal of every allowed kernel; anything else (out of memory) as it is.
    if (chosen == "auto" || std::string(e.what()).find("No available kernel") == std::string::npos) throw;
    throw ConfigError("device.attention=" + chosen + ": LibTorch's " + chosen +
                      " attention does not take these inputs (" + std::string(c10::toString(q.scalar_type())) + " on " +
                      q.device().str() + ", head size " + std::to_string(q.size(-1)) +
                      "); use device.attention=auto. LibTorch said: " + e.what_without_backtrace());
  }
}

void note_attention_backend(const char* name) {
  if (!recorded) record([&] { return name; });
}

std::string attention_backend_used() {
  std::lock_guard<std::mutex> lock(record_mutex);
  return used;
}

}  // namespace hpctrain
