#pragma once
// The scaled-dot-product attention of the Transformer and the Forecaster: LibTorch's fused
// operator with the backend the run chose (device.attention) and the one LibTorch took
// recorded for report.json (training.attention_backend).
#include <torch/torch.h>

#include <string>

namespace hpctrain {

// The kernels LibTorch's scaled_dot_product_attention may use in this process: "auto" leaves
// its own choice per call (flash, memory-efficient, cuDNN, math: the first that takes the
// inputs); "flash", "efficient", "cudnn" or "math" allows that one alone. Starts a new record
// for attention_backend_used (each training run of a search calls it).
// "efficient" and "cudnn" need a GPU (`gpu` false: a config error).
void choose_attention_backend(const std::string& choice, bool gpu);

// softmax(q k^T / sqrt(d) [+ causal mask]) v over [n, heads, t, d]. The first call with
// gradients enabled records the backend LibTorch picks for it. With one backend chosen that
// cannot take the inputs (flash on float32 on a GPU, say), an error naming device.attention.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double dropout,
                        bool causal = false);

// A model computing attention itself (the Transformer's CPU path with counter-based dropout)
// records it here as "math".
void note_attention_backend(const char* name);

// The backend recorded ("" when no attention ran with gradients enabled): math, flash,
// efficient, cudnn, overrideable.
std::string attention_backend_used();

}  // namespace hpctrain
