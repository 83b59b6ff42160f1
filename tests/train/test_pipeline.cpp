// Pipeline stages on real ranks: every stage's fp32 gradients after one step over the
// microbatches equal a single rank's full-model gradients on the same global batch
// (rtol 1e-5, atol 4e-5, as torch.distributed.pipelining's tests), for each schedule, on a
// pipeline of all ranks and on a 2 x 2 grid.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "comm/Communicator.hpp"
#include "comm/ProcessGrid.hpp"
#include "eval/Metrics.hpp"
#include "models/Model.hpp"
#include "train/Pipeline.hpp"

using namespace hpctrain;

namespace {

struct Family {
  std::string label;
  ModelConfig config;
  std::vector<std::int64_t> sample;
};

std::vector<Family> families() {
  std::vector<Family> out;
  ModelConfig mlp;
  mlp.name = "mlp";
  mlp.hidden = {24, 20, 16, 16, 12, 12, 10, 10};
  mlp.batch_norm = false;
  out.push_back({"mlp", mlp, {1, 6, 6}});
  ModelConfig vit;
  vit.name = "transformer";
  vit.embed_dim = 16;
  vit.heads = 2;
  vit.layers = 8;
  vit.mlp_ratio = 2.0;
  vit.patch_size = 2;
  out.push_back({"transformer", vit, {1, 6, 6}});
  ModelConfig resnet;
  resnet.name = "resnet";
  resnet.blocks = {2, 2, 2, 2};
  resnet.width = 4;
  resnet.norm = "none";
  out.push_back({"resnet", resnet, {3, 8, 8}});
  return out;
}

constexpr std::int64_t kClasses = 5, kBatch = 16;

struct Reference {
  std::vector<torch::Tensor> grads;
  double loss = 0;
};

// One rank, the whole model, the whole batch: mean loss, backward.
Reference full_step(const Family& f, const torch::Tensor& x, const torch::Tensor& y, const LossSpec& loss) {
  torch::manual_seed(7);
  auto model = build_model(f.config, InputSpec{f.sample, kClasses});
  auto total = loss_sum(loss, model->forward(x), y);
  (total / static_cast<double>(kBatch)).backward();
  Reference r;
  for (const auto& p : model->parameters()) r.grads.push_back(p.grad().clone());
  r.loss = total.item<double>();
  return r;
}

void expect_pipeline_matches(const Family& f, ScheduleKind kind, int stages, int microbatches, int chunks) {
  Communicator world = Communicator::world();
  torch::manual_seed(11);  // the same batch on every rank
  std::vector<std::int64_t> shape{kBatch};
  shape.insert(shape.end(), f.sample.begin(), f.sample.end());
  const auto x = torch::randn(shape);
  const auto y = torch::randint(kClasses, {kBatch}, torch::kLong);
  TrainConfig tc;
  const LossSpec loss = resolve_loss(tc, true);
  const Reference want = full_step(f, x, y, loss);

  torch::manual_seed(7);
  auto model = build_model(f.config, InputSpec{f.sample, kClasses});
  ProcessGrid grid(world, stages, GridOrder::ReplicasInner);
  const PipelineShape shape_p{stages, microbatches, chunks};
  std::vector<double> costs;
  const auto counts = piece_parameter_counts(*model);
  for (std::int64_t b = 1; b <= model->pipeline_blocks(); ++b) costs.push_back(static_cast<double>(counts[b]));
  StagePlan plan = make_stage_plan(kind, shape_p, model->pipeline_blocks(), {}, costs);
  PipelineEngine engine(*model, grid, plan, torch::kCPU, f.sample, "fp32", false);
  engine.drop_other_pieces();
  // This replica's rows of the global batch.
  const std::int64_t per = kBatch / grid.replicas();
  const auto rows_x = x.narrow(0, grid.replica() * per, per), rows_y = y.narrow(0, grid.replica() * per, per);
  auto out = engine.train_step(
      rows_x, rows_y, [&](const torch::Tensor& o, const torch::Tensor& t) { return loss_sum(loss, o, t); },
      [](const torch::Tensor& sum) { return sum / static_cast<double>(kBatch); }, nullptr);
  // Data parallel: the replicas' gradients sum to the global batch's.
  for (const auto& p : engine.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    auto g = p.grad().contiguous();
    grid.data().allreduce_sum(g.data_ptr<float>(), static_cast<std::size_t>(g.numel()));
    p.mutable_grad() = g;
  }
  const std::string where = f.label + " " + schedule_kind_name(kind) + " p=" + std::to_string(stages) +
                            " m=" + std::to_string(microbatches) + " v=" + std::to_string(chunks) + " rank " +
                            std::to_string(world.rank());
  const auto params = model->parameters();
  std::size_t compared = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel() == 0) continue;  // another stage's
    ASSERT_TRUE(params[i].grad().defined()) << where << " parameter " << i;
    EXPECT_TRUE(torch::allclose(params[i].grad(), want.grads[i], 1e-5, 4e-5))
        << where << " parameter " << i << " max diff " << (params[i].grad() - want.grads[i]).abs().max().item<double>();
    ++compared;
  }
  EXPECT_GT(compared, 0u) << where;
  EXPECT_EQ(compared, engine.parameters().size()) << where;
  // The loss is the same quantity as without a pipeline: the last stages' sums add up to it.
  double loss_here = grid.last_stage() ? out.loss_sum.item<double>() : 0.0;
  world.allreduce_sum(&loss_here, 1);
  EXPECT_NEAR(loss_here, want.loss, 1e-4 * std::abs(want.loss)) << where;
  if (grid.last_stage()) {
    EXPECT_EQ(out.outputs.size(0), per) << where;
  }
}

}  // namespace

TEST(Pipeline, StageGradientsEqualAFullModelStep) {
  Communicator world = Communicator::world();
  if (world.size() < 2) GTEST_SKIP() << "needs two or more ranks";
  const int p = world.size();
  for (const auto& f : families()) {
    for (int m : {4, 8}) {
      expect_pipeline_matches(f, ScheduleKind::GPipe, p, m, 1);
      expect_pipeline_matches(f, ScheduleKind::OneFOneB, p, m, 1);
      if (m % p == 0 && 2 * p <= 8) expect_pipeline_matches(f, ScheduleKind::Interleaved, p, m, 2);
    }
  }
}

TEST(Pipeline, GridOfTwoStagesAndTwoReplicasEqualsAFullModelStep) {
  Communicator world = Communicator::world();
  if (world.size() != 4) GTEST_SKIP() << "needs four ranks";
  for (const auto& f : families()) {
    expect_pipeline_matches(f, ScheduleKind::OneFOneB, 2, 4, 1);
    expect_pipeline_matches(f, ScheduleKind::Interleaved, 2, 4, 2);
  }
}
