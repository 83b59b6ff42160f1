#pragma once
// What one rank contributes to a checkpoint, as named tensors, and the optimizer state of
// one parameter as named tensors. Internal to checkpoint/: Checkpoint.cpp gathers the parts
// of every rank of a grid on its first rank and writes them in the whole-model layout
// (docs/checkpoints.md).
//
// Part names: "p/<i>" parameter i (module order), "o/<i>/<key>" its optimizer state,
// "b/<i>" buffer i, "sums" the epoch's running sums, "rng" the generator state, "place"
// the rank's [stage, replica].
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace hpctrain {

using CheckpointParts = std::map<std::string, torch::Tensor>;

// Bytes of `parts` (each tensor's name, type, shape and contents, copied to the CPU) and
// back. unpack_parts throws RuntimeFailure naming `context` on malformed bytes.
std::string pack_parts(const CheckpointParts& parts);
CheckpointParts unpack_parts(const std::string& bytes, const std::string& context);

// The keys optimizer state may have, in the order a checkpoint stores them.
const std::vector<std::string>& optimizer_state_keys();

// Optimizer state of one parameter as named tensors (empty before its first step).
std::vector<std::pair<std::string, torch::Tensor>> optimizer_tensors(torch::optim::Optimizer& optimizer,
                                                                     const torch::Tensor& p);
// Sets it back (`values` empty: no state); `context` names the file in errors.
void set_optimizer_tensors(torch::optim::Optimizer& optimizer, const torch::Tensor& p,
                           const std::map<std::string, torch::Tensor>& values, const std::string& context);

}  // namespace hpctrain
