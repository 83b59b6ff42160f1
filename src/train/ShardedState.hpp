#pragma once
// Optimizer state under parallel.shard: each replica's optimizer steps its chunks of the flat
// gradient buckets (comm/GradientReducer.hpp ShardBucket). Checkpoints hold the whole model's
// state per parameter, as an unsharded run writes it, so any layout reads them: these turn
// chunks into that form and back.
#include <torch/torch.h>

#include <memory>

#include "checkpoint/Checkpoint.hpp"
#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "config/Config.hpp"
#include "models/Model.hpp"

namespace hpctrain {

// Collective over `data` (the reducer's ranks): on its rank 0, a new optimizer (`config`'s
// kind) over the reducer's parameters holding each parameter's whole state, gathered from
// every rank's chunks of `shards`; nullptr elsewhere.
std::unique_ptr<torch::optim::Optimizer> gather_sharded_state(const GradientReducer& reducer,
                                                              torch::optim::Optimizer& shards,
                                                              const OptimizerConfig& config, const Communicator& data);

// Collective over `data`: this rank's slices for a checkpoint written in parallel
// (checkpoint.parallel_write), with every parameter whole (stage 3: in a WholeParameters
// scope). `model` holds the model's parameters in module order, `held` which of them this
// rank's stage holds (empty: all). Each rank takes the elements of its chunk of every
// bucket, of the parameters and of their state in `shards`; a parameter stored in another
// order than C order (channels-last) is taken whole by the first rank, its state gathered
// there; parameters outside the buckets too.
ShardedCheckpointState sharded_checkpoint_state(const GradientReducer& reducer, torch::optim::Optimizer& shards,
                                                const std::vector<torch::Tensor>& model, const std::vector<bool>& held,
                                                const Communicator& data);

// Local: sets `shards`' state of this rank's chunks from a checkpoint, reading only their
// elements (a parameter stored in another order than C order: its whole state). `model`: the
// model's parameters in module order. Parameters without state leave their chunk's empty.
void read_sharded_state(const GradientReducer& reducer, torch::optim::Optimizer& shards, const CheckpointReader& file,
                        const std::vector<torch::Tensor>& model);

// The reducer's parameters (every parameter in its buckets), for the optimizer `whole`.
std::vector<torch::Tensor> sharded_parameters(const GradientReducer& reducer);

// parallel.shard=parameters: the reducer's groups for `trained` (a subset of the model's
// parameters), each one's model piece.
std::vector<std::int64_t> piece_groups(const ModelImpl& model, const std::vector<torch::Tensor>& trained);
// The piece hooks that gather each piece's parameters through `window` before its forward
// (prefetching the next piece) and its backward (prefetching the one before) and free them
// after its forward (the last piece's stay for its backward, which follows). `pieces`: how
// many the model has.
std::shared_ptr<PieceHooks> window_hooks(ParameterWindow& window, std::int64_t pieces);
// Before a rank evaluates `rows` rows in batches of `batch` with stage 3's window: every
// forward gathers pieces collectively, and the replicas' shares of a split may take different
// numbers of batches. Agrees on the most (one reduction over `data`) and runs the missing
// forwards' gathers first, so every replica issues the same gathers. No window: nothing.
void match_window_gathers(ModelImpl& model, const ParameterWindow* window, const Communicator& data, std::int64_t rows,
                          std::int64_t batch);

// Bytes of optimizer state `optimizer` holds, measured from its tensors.
std::int64_t optimizer_state_bytes(torch::optim::Optimizer& optimizer);

}  // namespace hpctrain
