// Where a pipeline's stages start: the plan (train/Pipeline.hpp StagePlan), its balancing
// by measured block costs, and its description.
#include <algorithm>

#include "models/Model.hpp"
#include "train/Device.hpp"
#include "train/MixedPrecision.hpp"
#include "train/Pipeline.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

std::string StagePlan::describe() const {
  std::string out;
  for (int k = 0; k < virtual_stages(); ++k) {
    const auto first = first_block[static_cast<std::size_t>(k)];
    const auto last = piece_end(k) - 2;  // pieces are blocks + 1; the head is piece blocks + 1
    out += (k ? " | " : "") + std::string(k == 0 ? "stem+" : "") + "blocks " + std::to_string(first) + "-" +
           std::to_string(std::min(last, blocks - 1)) + (k + 1 == virtual_stages() ? "+head" : "");
  }
  return out;
}

std::vector<double> measure_block_costs(ModelImpl& model, const std::vector<std::int64_t>& sample, std::int64_t rows,
                                        const torch::Device& device, const std::string& precision) {
  const std::int64_t blocks = model.pipeline_blocks();
  std::vector<double> piece(static_cast<std::size_t>(blocks + 2), 1e300);
  const bool training = model.is_training();
  model.eval();
  std::vector<std::int64_t> shape{rows};
  shape.insert(shape.end(), sample.begin(), sample.end());
  for (int round = 0; round < 3; ++round) {
    torch::Tensor x = torch::zeros(shape, torch::TensorOptions(device));
    for (std::int64_t i = 0; i < blocks + 2; ++i) {
      auto in = x.detach();
      if (i > 0 && in.is_floating_point()) in.requires_grad_(true);
      synchronize(device);
      const double t0 = wall_seconds();
      torch::Tensor y;
      {
        AutocastScope autocast(precision, device.type());
        y = model.run_piece(i, in);
      }
      if (y.requires_grad()) y.to(torch::kFloat).sum().backward();  // a stem without parameters has none
      synchronize(device);
      auto& best = piece[static_cast<std::size_t>(i)];
      best = std::min(best, wall_seconds() - t0);
      x = y.detach();
    }
  }
  for (auto& p : model.parameters()) p.mutable_grad().reset();
  model.train(training);
  std::vector<double> costs(piece.begin() + 1, piece.end() - 1);
  costs.front() += piece.front();
  costs.back() += piece.back();
  return costs;
}

StagePlan make_stage_plan(ScheduleKind kind, const PipelineShape& shape, std::int64_t blocks,
                          const std::vector<std::int64_t>& explicit_list, const std::vector<double>& block_costs) {
  check_pipeline_shape(kind, shape);
  StagePlan plan;
  plan.kind = kind;
  plan.shape = shape;
  plan.blocks = blocks;
  const int parts = shape.stages * shape.chunks;
  plan.first_block =
      explicit_list.empty() ? balanced_split(block_costs, parts) : explicit_split(explicit_list, blocks, parts);
  return plan;
}

}  // namespace hpctrain
