// The pipeline view that every model shares: pieces of parameters and buffers by name.
#include "models/Model.hpp"

#include <stdexcept>

namespace hpctrain {
namespace {

template <typename Named>
std::vector<std::int64_t> pieces_of(const ModelImpl& model, const Named& named) {
  std::vector<std::int64_t> pieces;
  pieces.reserve(named.size());
  for (const auto& item : named) pieces.push_back(model.piece_of(item.key()));
  return pieces;
}

// Identity in forward; its backward, which autograd runs before the backward of what produced
// the input, calls before_backward.
struct BeforeBackward : torch::autograd::Function<BeforeBackward> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, PieceHooks* hooks,
                               std::int64_t piece) {
    ctx->saved_data["hooks"] = static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(hooks));
    ctx->saved_data["piece"] = piece;
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* hooks = reinterpret_cast<PieceHooks*>(static_cast<std::intptr_t>(ctx->saved_data["hooks"].toInt()));
    hooks->before_backward(ctx->saved_data["piece"].toInt());
    return {grads[0], torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor ModelImpl::run_piece(std::int64_t piece, torch::Tensor x) {
  (void)x;
  throw std::logic_error(name() + " cannot be split into pipeline pieces (asked for piece " + std::to_string(piece) +
                         ")");
}

std::vector<std::int64_t> ModelImpl::parameter_pieces() const {
  return pieces_of(*this, named_parameters());
}

std::vector<std::int64_t> ModelImpl::buffer_pieces() const {
  return pieces_of(*this, named_buffers());
}

std::int64_t ModelImpl::piece_of(const std::string& name) const {
  if (pipeline_blocks() == 0) return 0;
  // The shortest assigned path that is `name` or a dotted prefix of it: "block1" holds
  // "block1.fc1.weight", not "block10.fc1.weight".
  for (std::size_t end = name.find('.');; end = name.find('.', end + 1)) {
    const auto it = piece_paths_.find(name.substr(0, end));
    if (it != piece_paths_.end()) return it->second;
    if (end == std::string::npos) break;
  }
  throw std::logic_error(this->name() + ": no pipeline piece holds \"" + name + "\"");
}

void ModelImpl::assign_piece(const std::string& path, std::int64_t piece) {
  piece_paths_[path] = piece;
}

torch::Tensor ModelImpl::run_pieces(torch::Tensor x) {
  const auto last = pipeline_blocks() + 1;
  for (std::int64_t piece = 0; piece <= last; ++piece) x = run_hooked(piece, std::move(x));
  return x;
}

void ModelImpl::run_hooks_only() {
  if (!hooks_) return;
  torch::NoGradGuard no_grad;
  const auto last = pipeline_blocks() == 0 ? 0 : pipeline_blocks() + 1;
  for (std::int64_t piece = 0; piece <= last; ++piece) {
    hooks_->before_forward(piece);
    hooks_->after_forward(piece);
  }
}

torch::Tensor ModelImpl::run_hooked(std::int64_t piece, torch::Tensor x) {
  if (!hooks_) return run_piece(piece, std::move(x));
  hooks_->before_forward(piece);
  auto y = run_piece(piece, std::move(x));
  hooks_->after_forward(piece);
  // The hooks outlive the graph: the trainer that set them outlives its steps.
  if (torch::GradMode::is_enabled() && y.requires_grad()) y = BeforeBackward::apply(y, hooks_.get(), piece);
  return y;
}

void ModelImpl::check_piece(std::int64_t piece) const {
  if (piece < 0 || piece > pipeline_blocks() + 1) {
    throw std::out_of_range(name() + ": pipeline piece " + std::to_string(piece) + " does not exist (0 .. " +
                            std::to_string(pipeline_blocks() + 1) + ")");
  }
}

std::vector<std::int64_t> piece_parameter_counts(const ModelImpl& model) {
  std::vector<std::int64_t> counts(
      static_cast<std::size_t>(model.pipeline_blocks() == 0 ? 1 : model.pipeline_blocks() + 2), 0);
  const auto pieces = model.parameter_pieces();
  const auto parameters = model.parameters();
  for (std::size_t i = 0; i < parameters.size(); ++i)
    counts[static_cast<std::size_t>(pieces[i])] += parameters[i].numel();
  return counts;
}

}  // namespace hpctrain
