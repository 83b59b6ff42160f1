// Synchronized batch norm over real ranks: the global batch split unevenly over the ranks
// gives what batch norm computes on the whole batch in one process (outputs, summed
// gradients, running statistics), with its sums ordered through the gradient reducer's
// communication thread, and under gradient checkpointing as well.
#include <gtest/gtest.h>

#include "comm/Communicator.hpp"
#include "comm/GradientReducer.hpp"
#include "models/Model.hpp"

using namespace hpctrain;

namespace {

struct Step {
  torch::Tensor output;  // this rank's rows
  std::vector<torch::Tensor> grads, buffers;
};

// Rank r holds rows [first, first + 3 + r) of the global batch.
std::pair<std::int64_t, std::int64_t> my_rows(const Communicator& comm) {
  std::int64_t first = 0;
  for (int r = 0; r < comm.rank(); ++r) first += 3 + r;
  return {first, 3 + comm.rank()};
}

std::int64_t global_rows(const Communicator& comm) {
  std::int64_t n = 0;
  for (int r = 0; r < comm.size(); ++r) n += 3 + r;
  return n;
}

// One training step of `c` on rows [first, first + count) of x, the loss scaled so that
// the gradients summed over `comm` are those of the mean over the global batch.
Step train_step(ModelConfig c, const InputSpec& in, const torch::Tensor& x, const torch::Tensor& y,
                const Communicator& comm, std::int64_t first, std::int64_t count, bool sync) {
  torch::manual_seed(21);
  std::unique_ptr<GradientReducer> reducer;
  GroupSum group;
  if (sync) group = [&](torch::Tensor& v) { reducer->sum_in_order(v); };
  auto model = build_model(c, in, group);
  model->train();
  reducer = std::make_unique<GradientReducer>(model->parameters(), 0.001, comm, /*overlap=*/true);
  reducer->zero();
  const auto rows = x.narrow(0, first, count);
  const auto out = model->forward(rows);
  const auto loss = (out - y.narrow(0, first, count)).pow(2).sum() / static_cast<double>(x.size(0));
  loss.backward();
  reducer->finish();
  Step s{out.detach(), {}, {}};
  for (auto& p : model->parameters()) s.grads.push_back(p.grad().clone());
  for (auto& b : model->buffers()) s.buffers.push_back(b.clone());
  return s;
}

void expect_sync_equals_whole_batch(ModelConfig c, const InputSpec& in, const std::vector<std::int64_t>& sample) {
  Communicator world = Communicator::world();
  Communicator self = world.split(world.rank(), 0);
  const auto n = global_rows(world);
  std::vector<std::int64_t> shape{n};
  shape.insert(shape.end(), sample.begin(), sample.end());
  torch::manual_seed(5);  // the same global batch on every rank
  const auto x = torch::randn(shape) * 2 + 1;
  const auto y = torch::randn({n, in.outputs});
  // The reference: plain batch norm on the whole batch, alone.
  c.norm = "batch";
  const auto whole = train_step(c, in, x, y, self, 0, n, false);
  c.norm = "sync_batch";
  const auto [first, count] = my_rows(world);
  for (const std::int64_t every : {0, 1}) {
    c.checkpoint_every = every;
    const auto split = train_step(c, in, x, y, world, first, count, true);
    const auto label = c.name + " checkpoint_every=" + std::to_string(every);
    EXPECT_TRUE(torch::allclose(split.output, whole.output.narrow(0, first, count), 1e-4, 1e-5)) << label;
    ASSERT_EQ(split.grads.size(), whole.grads.size());
    for (std::size_t i = 0; i < split.grads.size(); ++i) {
      EXPECT_TRUE(torch::allclose(split.grads[i], whole.grads[i], 1e-4, 1e-5))
          << label << " gradient " << i << ": max |diff| "
          << (split.grads[i] - whole.grads[i]).abs().max().item<double>();
    }
    ASSERT_EQ(split.buffers.size(), whole.buffers.size());
    for (std::size_t i = 0; i < split.buffers.size(); ++i) {
      EXPECT_TRUE(torch::allclose(split.buffers[i].to(torch::kDouble), whole.buffers[i].to(torch::kDouble), 1e-5, 1e-6))
          << label << " buffer " << i;
    }
  }
}

}  // namespace

TEST(SyncBatchNorm, ConvolutionsOverTheGroupEqualTheWholeBatch) {
  ModelConfig c;
  c.name = "cnn";
  c.channels = {4, 6};
  c.fc_width = 8;
  expect_sync_equals_whole_batch(c, InputSpec{{2, 8, 8}, 3}, {2, 8, 8});
}

TEST(SyncBatchNorm, ResidualBlocksOverTheGroupEqualTheWholeBatch) {
  ModelConfig c;
  c.name = "resnet";
  c.width = 4;
  c.blocks = {1, 1};
  expect_sync_equals_whole_batch(c, InputSpec{{1, 8, 8}, 2}, {1, 8, 8});
}

TEST(SyncBatchNorm, FeaturesAndSeriesOverTheGroupEqualTheWholeBatch) {
  ModelConfig m;
  m.name = "mlp";
  m.hidden = {16, 8};
  expect_sync_equals_whole_batch(m, InputSpec{{10}, 1}, {10});
  ModelConfig s;
  s.name = "cnn_bilstm";
  s.channels = {4};
  s.hidden_size = 6;
  s.rnn_layers = 1;
  expect_sync_equals_whole_batch(s, InputSpec{{3, 12}, 1}, {3, 12});
}

TEST(SyncBatchNorm, EvaluationUsesTheRunningStatistics) {
  ModelConfig c;
  c.name = "mlp";
  c.hidden = {4};
  c.norm = "sync_batch";
  int calls = 0;
  auto model = build_model(c, InputSpec{{3}, 1}, [&](torch::Tensor&) { ++calls; });
  model->eval();
  torch::NoGradGuard no_grad;
  model->forward(torch::randn({5, 3}));
  EXPECT_EQ(calls, 0);
}
