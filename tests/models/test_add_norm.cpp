// models/AddNorm: the fused residual add + LayerNorm against ATen's x + r and layer_norm, through
// its CPU reference (models/AddNormKernels): outputs and every gradient, with and without a
// gradient for h, in float32 and with bfloat16 inputs. (The CUDA kernel is checked against ATen
// by `hpctrain bench kernels` in the gpu test.)
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/AddNorm.hpp"

namespace hpctrain {
namespace {

struct Result {
  torch::Tensor h, y, dx, dr, dw, db;
};

template <typename Fn>
Result run(Fn fn, const torch::Tensor& x0, const torch::Tensor& r0, const torch::Tensor& w0, const torch::Tensor& b0,
           bool grad_h) {
  auto x = x0.detach().requires_grad_(), r = r0.detach().requires_grad_();
  auto w = w0.detach().requires_grad_(), b = b0.detach().requires_grad_();
  auto [h, y] = fn(x, r, w, b, 1e-5);
  torch::manual_seed(11);
  const auto dy = torch::randn(y.sizes()).to(y.scalar_type());
  // The block's output is h + MLP(y): h's own gradient comes from that use.
  auto loss = (y.to(torch::kFloat) * dy.to(torch::kFloat)).sum();
  if (grad_h) loss = loss + (h.to(torch::kFloat) * torch::randn(h.sizes())).sum();
  loss.backward();
  return {h.detach(), y.detach(), x.grad(), r.grad(), w.grad(), b.grad()};
}

void expect_close(const torch::Tensor& got, const torch::Tensor& want, double tol, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  const auto diff = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
  const auto scale = want.to(torch::kDouble).abs().max().item<double>();
  EXPECT_LE(diff, tol * std::max(scale, 1.0)) << what;
}

void compare(c10::ScalarType xt, c10::ScalarType rt, bool grad_h, double tol) {
  torch::manual_seed(5);
  const auto x = torch::randn({3, 5, 48}).to(xt), r = torch::randn({3, 5, 48}).to(rt);
  const auto w = 1 + 0.2 * torch::randn({48}), b = 0.2 * torch::randn({48});
  const auto fused = run([](auto&&... a) { return add_layer_norm(a...); }, x, r, w, b, grad_h);
  const auto aten = run([](auto&&... a) { return add_layer_norm_unfused(a...); }, x, r, w, b, grad_h);
  expect_close(fused.h, aten.h, tol, "h");
  expect_close(fused.y, aten.y, tol, "y");
  expect_close(fused.dx, aten.dx, tol, "dx");
  expect_close(fused.dr, aten.dr, tol, "dr");
  expect_close(fused.dw, aten.dw, tol, "dweight");
  expect_close(fused.db, aten.db, tol, "dbias");
}

TEST(AddNorm, Float32MatchesAten) {
  compare(torch::kFloat, torch::kFloat, true, 1e-5);
}

TEST(AddNorm, WithoutGradientOfH) {
  compare(torch::kFloat, torch::kFloat, false, 1e-5);
}

TEST(AddNorm, BFloat16BranchIntoFloatStream) {
  compare(torch::kFloat, torch::kBFloat16, true, 1e-5);
}

// bfloat16 h: the sum is rounded before the statistics, as ATen's add rounds it; y, dx, dr are
// bfloat16 (one rounding apart at most: 2^-8 relative).
TEST(AddNorm, BFloat16MatchesAten) {
  compare(torch::kBFloat16, torch::kBFloat16, true, 1e-2);
}

TEST(AddNorm, SumIsRoundedBeforeTheStatistics) {
  // 1 + 2^-9 is not a bfloat16: h holds 1, so every row of h is constant and y is beta.
  const auto x = torch::full({2, 8}, 1.0, torch::kBFloat16), r = torch::full({2, 8}, 1.0 / 512, torch::kBFloat16);
  const auto w = torch::ones({8}), b = torch::arange(8, torch::kFloat);
  const auto [h, y] = add_layer_norm(x, r, w, b, 1e-5);
  EXPECT_TRUE(torch::equal(h, torch::ones({2, 8}, torch::kBFloat16)));
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat), b.expand({2, 8})));
}

TEST(AddNorm, AutocastGivesFloatOutputAsLayerNorm) {
  const auto x = torch::randn({4, 16}), r = torch::randn({4, 16}).to(torch::kBFloat16);
  const auto w = torch::ones({16}), b = torch::zeros({16});
  at::autocast::set_autocast_enabled(at::kCPU, true);
  const auto fused = add_layer_norm(x, r, w, b, 1e-5);
  const auto aten = add_layer_norm_unfused(x, r, w, b, 1e-5);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  EXPECT_EQ(fused.second.scalar_type(), aten.second.scalar_type());
  EXPECT_EQ(fused.first.scalar_type(), aten.first.scalar_type());
}

// y feeding a matrix product under autocast: y in autocast's type, the float y rounded as the
// product's cast would round it, and every gradient as with a float y cast afterwards.
TEST(AddNorm, UnderAutocastAMatmulsInputComesInAutocastsType) {
  torch::manual_seed(5);
  const auto x0 = torch::randn({3, 5, 48}), r0 = torch::randn({3, 5, 48}).to(torch::kBFloat16);
  const auto w0 = 1 + 0.2 * torch::randn({48}), b0 = 0.2 * torch::randn({48});
  const auto dy = torch::randn({3, 5, 48}).to(torch::kBFloat16);
  auto run = [&](bool fused, bool y_for_matmul) {
    auto x = x0.detach().requires_grad_(), r = r0.detach().requires_grad_();
    auto w = w0.detach().requires_grad_(), b = b0.detach().requires_grad_();
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    auto [h, y] = (fused ? add_layer_norm : add_layer_norm_unfused)(x, r, w, b, 1e-5, y_for_matmul);
    if (!y_for_matmul) y = y.to(torch::kBFloat16);  // what the matrix product's autocast does
    at::autocast::set_autocast_enabled(at::kCPU, false);
    (y.to(torch::kFloat) * dy.to(torch::kFloat)).sum().backward();
    return Result{h.detach(), y.detach(), x.grad(), r.grad(), w.grad(), b.grad()};
  };
  for (const bool fused : {false, true}) {
    const auto direct = run(fused, true), cast = run(fused, false);
    EXPECT_EQ(direct.y.scalar_type(), torch::kBFloat16);
    const double tol = fused ? 1e-6 : 0.0;  // ATen's: the same operators, bitwise
    expect_close(direct.y, cast.y, tol, "y");
    expect_close(direct.dx, cast.dx, tol, "dx");
    expect_close(direct.dr, cast.dr, tol, "dr");
    expect_close(direct.dw, cast.dw, tol, "dweight");
    expect_close(direct.db, cast.db, tol, "dbias");
  }
  const auto fused = run(true, true), aten = run(false, true);
  expect_close(fused.y, aten.y, 1e-2, "y, fused against ATen's");
  expect_close(fused.dx, aten.dx, 1e-5, "dx, fused against ATen's");
}

// The LayerNorm alone (before the attention's QKV product): the operator without the add, in
// float32 and under bf16 autocast (y in bfloat16, as the product's cast would round it), against
// ATen's layer_norm and the cast; without weights (ATen's ops then) too.
TEST(LayerNormForMatmul, AgainstAtensLayerNormAndCast) {
  torch::manual_seed(9);
  const auto x0 = torch::randn({3, 5, 48});
  const auto w0 = 1 + 0.2 * torch::randn({48}), b0 = 0.2 * torch::randn({48});
  for (const bool autocast : {false, true}) {
    for (const bool affine : {true, false}) {
      auto run = [&](bool fused) {
        auto x = x0.detach().requires_grad_();
        auto w = affine ? w0.detach().requires_grad_() : torch::Tensor();
        auto b = affine ? b0.detach().requires_grad_() : torch::Tensor();
        at::autocast::set_autocast_enabled(at::kCPU, autocast);
        at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
        auto y = (fused ? layer_norm_for_matmul : layer_norm_for_matmul_unfused)(x, w, b, 1e-5);
        at::autocast::set_autocast_enabled(at::kCPU, false);
        // With weights the operator's own loops ran (not ATen's ops), whose backward follows.
        if (fused && affine) {
          EXPECT_NE(y.grad_fn()->name().find("LayerNormForMatmul"), std::string::npos);
        }
        torch::manual_seed(13);
        (y.to(torch::kFloat) * torch::randn(y.sizes()).to(y.scalar_type()).to(torch::kFloat)).sum().backward();
        return Result{x.detach(),
                      y.detach(),
                      x.grad(),
                      {},
                      affine ? w.grad() : torch::Tensor(),
                      affine ? b.grad() : torch::Tensor()};
      };
      const auto fused = run(true), aten = run(false);
      EXPECT_EQ(fused.y.scalar_type(), autocast ? torch::kBFloat16 : torch::kFloat);
      // bfloat16 y: one rounding step apart at most where the two float results straddle it.
      expect_close(fused.y, aten.y, autocast ? 1e-2 : 1e-5, "y");
      expect_close(fused.dx, aten.dx, 1e-5, "dx");
      if (affine) {
        expect_close(fused.dw, aten.dw, 1e-5, "dweight");
        expect_close(fused.db, aten.db, 1e-5, "dbias");
      }
    }
  }
  EXPECT_FALSE(layer_norm_for_matmul_fused_on(x0, w0, b0));  // GPUs only
}

TEST(AddNorm, NotFusedOnTheCpuInModels) {
  // The Transformer takes the kernel on GPUs only; on CPUs it keeps ATen's ops.
  EXPECT_FALSE(
      add_layer_norm_fused_on(torch::randn({2, 4}), torch::randn({2, 4}), torch::ones({4}), torch::zeros({4})));
}

}  // namespace
}  // namespace hpctrain
