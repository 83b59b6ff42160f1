#pragma once
// Every architecture is a torch::nn::Module with forward(x) -> outputs (class logits or a regression
// value per sample), built from config
// by the registry.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/Config.hpp"
#include "models/Normalization.hpp"

namespace hpctrain {

struct InputSpec {
  std::vector<std::int64_t> sample_shape;  // C, H, W for images; F for features
  std::int64_t outputs = 0;                // classes, or 1 for regression
};

// Called around each piece when set (parallel.shard=parameters gathers a piece's parameters
// before it runs, forward and backward, and frees them after its forward).
struct PieceHooks {
  virtual ~PieceHooks() = default;
  virtual void before_forward(std::int64_t piece) = 0;
  virtual void after_forward(std::int64_t piece) = 0;
  // On autograd's thread, before the piece's backward (recording forwards only).
  virtual void before_backward(std::int64_t piece) = 0;
};

struct ModelImpl : torch::nn::Module {
  virtual torch::Tensor forward(torch::Tensor x) = 0;

  // Pipeline view (parallel.pipeline_stages > 1): the model as a chain of pieces. Piece 0 is
  // the stem (input -> the first block's input), pieces 1..pipeline_blocks() the blocks, piece
  // pipeline_blocks()+1 the head (-> outputs). Running the pieces in order is forward(), bit
  // for bit: forward() of a splittable family is that loop (run_pieces), so a block piece is
  // checkpointed as in forward() and dropout draws in the same order.
  // 0 blocks: the model cannot be split (the default); it is then one piece, 0.
  virtual std::int64_t pipeline_blocks() const { return 0; }
  // Throws std::logic_error for a model that cannot be split, std::out_of_range for a piece
  // outside 0 .. pipeline_blocks() + 1.
  virtual torch::Tensor run_piece(std::int64_t piece, torch::Tensor x);
  // The piece of each of parameters() (same order, same length), and of each of buffers():
  // every parameter and buffer belongs to exactly one piece. Registration order is piece
  // order in every splittable family (the stem's first, the head's last).
  std::vector<std::int64_t> parameter_pieces() const;
  std::vector<std::int64_t> buffer_pieces() const;
  // The piece of the parameter or buffer `name` as named_parameters()/named_buffers() name it
  // ("block3.fc1.weight"); std::logic_error for a name no piece holds.
  std::int64_t piece_of(const std::string& name) const;
  // run_piece with the piece hooks around it (run_pieces and the pipeline run pieces so).
  torch::Tensor run_hooked(std::int64_t piece, torch::Tensor x);
  void set_piece_hooks(std::shared_ptr<PieceHooks> hooks) { hooks_ = std::move(hooks); }
  // Every piece's forward hooks in order without computing: what another rank's forward does to
  // the hooks' collectives, for a rank with fewer batches to evaluate.
  void run_hooks_only();

 protected:
  // `path` (a module or a parameter of this model: "stem", "block3", "layers.4", "position")
  // and everything under it belong to `piece`. Names stay what they are without a pipeline:
  // checkpoints and exports do not see pieces.
  void assign_piece(const std::string& path, std::int64_t piece);
  // The pieces in order: forward() of the splittable families.
  torch::Tensor run_pieces(torch::Tensor x);
  void check_piece(std::int64_t piece) const;

 private:
  std::map<std::string, std::int64_t> piece_paths_;
  std::shared_ptr<PieceHooks> hooks_;
};
using ModelPtr = std::shared_ptr<ModelImpl>;

using ModelFactory = std::function<ModelPtr(const ModelConfig&, const InputSpec&, const GroupSum&)>;

// Builds `config.name`; throws ConfigError for an unknown name or a shape that does not fit.
// `group` sums the statistics of synchronized batch norm (model.norm=sync_batch) over the
// data-parallel group; without it those layers use their rank's batch alone.
ModelPtr build_model(const ModelConfig& config, const InputSpec& input, const GroupSum& group = {});
std::vector<std::string> registered_models();
std::int64_t parameter_count(const torch::nn::Module& module);
// Parameter elements per piece (pipeline_blocks() + 2 of them; one for a model that cannot be
// split): the cost of a piece when balancing pipeline stages without a measurement.
std::vector<std::int64_t> piece_parameter_counts(const ModelImpl& model);
// Moves 4-D parameters and buffers to channels-last memory format (in place, same values).
void to_channels_last(torch::nn::Module& module);

}  // namespace hpctrain
