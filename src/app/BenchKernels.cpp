// `hpctrain bench kernels`: hpctrain's fused operators against ATen's on this machine's device:
// the error of each against a float64 reference of the same inputs (the check), and the
// forward+backward time of each (the benchmark).
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "models/AddNorm.hpp"
#include "models/FusedMlp.hpp"
#include "models/GemmEpilogue.hpp"
#include "models/SoftmaxCrossEntropy.hpp"
#include "util/Error.hpp"

namespace hpctrain {

namespace {

namespace json = boost::json;

struct KernelsArguments {
  std::string device = "auto", json_path;
  std::int64_t rows = 8192, dim = 1024, classes = 8192, repeats = 20;
};

enum class Side { Fused, Aten, Reference };
using Outputs = std::vector<torch::Tensor>;

// One operator on one set of inputs: its forward and backward on each side.
struct Case {
  std::string name;
  std::vector<std::string> outputs;
  double floor;  // the error allowed besides twice ATen's own: about the type's rounding
  std::function<Outputs(Side)> run;
};

// The LayerNorm before the QKV product under bfloat16 autocast (y of autocast's type).
Case layer_norm_case(const KernelsArguments& a, const torch::Device& device) {
  torch::manual_seed(8);
  const auto o = torch::TensorOptions().device(device);
  const auto x = torch::randn({a.rows, a.dim}, o), dy = torch::randn({a.rows, a.dim}, o);
  const auto w = 1 + 0.1 * torch::randn({a.dim}, o), b = 0.1 * torch::randn({a.dim}, o);
  auto run = [=](Side side) {
    auto cast = [&](const torch::Tensor& t) { return side == Side::Reference ? t.to(torch::kDouble) : t; };
    auto xs = cast(x).detach().requires_grad_(), ws = cast(w).detach().requires_grad_();
    auto bs = cast(b).detach().requires_grad_();
    at::autocast::set_autocast_enabled(device.type(), side != Side::Reference);
    at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
    auto ys =
        side == Side::Fused ? layer_norm_for_matmul(xs, ws, bs, 1e-5) : layer_norm_for_matmul_unfused(xs, ws, bs, 1e-5);
    at::autocast::set_autocast_enabled(device.type(), false);
    ys.backward(dy.to(ys.scalar_type()));
    return Outputs{ys.detach(), xs.grad(), ws.grad(), bs.grad()};
  };
  return {"layer_norm float32, y of autocast", {"y", "dx", "dweight", "dbias"}, 1e-2, run};
}

// `matmul_input`: as the Transformer calls it under autocast (to bfloat16), y the input of a
// matrix product, so of autocast's type (the float64 reference: no autocast).
Case add_norm_case(const char* name, c10::ScalarType h, c10::ScalarType r, double floor, const KernelsArguments& a,
                   const torch::Device& device, bool matmul_input = false) {
  torch::manual_seed(7);
  const auto o = torch::TensorOptions().device(device);
  const auto x = torch::randn({a.rows, a.dim}, o).to(h), rr = torch::randn({a.rows, a.dim}, o).to(r);
  const auto w = 1 + 0.1 * torch::randn({a.dim}, o), b = 0.1 * torch::randn({a.dim}, o);
  const auto dy = torch::randn({a.rows, a.dim}, o), dh = torch::randn({a.rows, a.dim}, o);
  auto run = [=](Side side) {
    // The reference: the same (rounded) inputs, everything in float64.
    auto cast = [&](const torch::Tensor& t) { return side == Side::Reference ? t.to(torch::kDouble) : t; };
    auto xs = cast(x).detach().requires_grad_(), rs = cast(rr).detach().requires_grad_();
    auto ws = cast(w).detach().requires_grad_(), bs = cast(b).detach().requires_grad_();
    const bool autocast = matmul_input && side != Side::Reference;
    at::autocast::set_autocast_enabled(device.type(), autocast);
    at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
    auto [hs, ys] = side == Side::Fused ? add_layer_norm(xs, rs, ws, bs, 1e-5, matmul_input)
                                        : add_layer_norm_unfused(xs, rs, ws, bs, 1e-5, matmul_input);
    at::autocast::set_autocast_enabled(device.type(), false);
    torch::autograd::backward({hs, ys}, {dh.to(hs.scalar_type()), dy.to(ys.scalar_type())});
    return Outputs{hs.detach(), ys.detach(), xs.grad(), rs.grad(), ws.grad(), bs.grad()};
  };
  return {std::string("add_layer_norm ") + name, {"h", "y", "dx", "dr", "dweight", "dbias"}, floor, run};
}

Case cross_entropy_case(const char* name, c10::ScalarType type, double floor, const KernelsArguments& a,
                        const torch::Device& device) {
  torch::manual_seed(9);
  const auto o = torch::TensorOptions().device(device);
  const auto z = (3 * torch::randn({a.rows, a.classes}, o)).to(type);
  const auto t = torch::randint(0, a.classes, {a.rows}, o.dtype(torch::kLong));
  const double scale = 1.0 / static_cast<double>(a.rows);  // the step's 1/batch
  auto run = [=](Side side) {
    namespace F = torch::nn::functional;
    auto zs = (side == Side::Reference ? z.to(torch::kDouble) : z).detach().requires_grad_();
    torch::Tensor loss;
    if (side == Side::Fused) loss = softmax_cross_entropy_sum(zs, t);
    if (side == Side::Aten) loss = softmax_cross_entropy_sum_unfused(zs, t);
    if (side == Side::Reference) loss = F::cross_entropy(zs, t, F::CrossEntropyFuncOptions().reduction(torch::kSum));
    (loss * scale).backward();
    return Outputs{loss.detach(), zs.grad()};
  };
  return {std::string("cross_entropy ") + name, {"loss", "dlogits"}, floor, run};
}

// The Transformer MLP fc2(gelu_tanh(fc1(x))) with hidden = 4 x dim, all inputs of one type:
// hpctrain's operator (cuBLASLt epilogues on a GPU) against ATen's linear, gelu and autograd.
Case mlp_case(const char* name, c10::ScalarType type, double floor, const KernelsArguments& a,
              const torch::Device& device) {
  torch::manual_seed(11);
  const auto o = torch::TensorOptions().device(device);
  const std::int64_t hidden = 4 * a.dim;
  const double s1 = 1 / std::sqrt(static_cast<double>(a.dim)), s2 = 1 / std::sqrt(static_cast<double>(hidden));
  const std::vector<torch::Tensor> in{
      torch::randn({a.rows, a.dim}, o).to(type), (s1 * torch::randn({hidden, a.dim}, o)).to(type),
      (0.1 * torch::randn({hidden}, o)).to(type), (s2 * torch::randn({a.dim, hidden}, o)).to(type),
      (0.1 * torch::randn({a.dim}, o)).to(type)};
  const auto dy = torch::randn({a.rows, a.dim}, o);
  auto run = [=](Side side) {
    std::vector<torch::Tensor> v;
    for (const auto& t : in)
      v.push_back((side == Side::Reference ? t.to(torch::kDouble) : t).detach().requires_grad_());
    const auto y = (side == Side::Fused ? mlp_gelu_tanh : mlp_gelu_tanh_unfused)(v[0], v[1], v[2], v[3], v[4]);
    y.backward(dy.to(y.scalar_type()));
    return Outputs{y.detach(), v[0].grad(), v[1].grad(), v[2].grad(), v[3].grad(), v[4].grad()};
  };
  return {std::string("mlp_gelu_tanh ") + name, {"y", "dx", "dw1", "db1", "dw2", "db2"}, floor, run};
}

// max |a - ref| / max |ref| of each output.
std::vector<double> errors(const Outputs& got, const Outputs& ref) {
  std::vector<double> out;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto r = ref[i].to(torch::kDouble).cpu(), g = got[i].to(torch::kDouble).cpu();
    const double scale = std::max(r.abs().max().item<double>(), 1e-30);
    out.push_back((g - r).abs().max().item<double>() / scale);
  }
  return out;
}

// Forward+backward milliseconds of the fused and ATen's side, alternating, medians.
std::pair<double, double> time_both(const Case& c, const torch::Device& device, std::int64_t repeats) {
  std::vector<double> ms[2];
  for (std::int64_t i = 0; i < repeats + 2; ++i) {
    for (int side = 0; side < 2; ++side) {
      if (device.is_cuda()) torch::cuda::synchronize();
      const auto start = std::chrono::steady_clock::now();
      c.run(side == 0 ? Side::Fused : Side::Aten);
      if (device.is_cuda()) torch::cuda::synchronize();
      const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
      if (i >= 2) ms[side].push_back(took.count());  // two warm-up rounds
    }
  }
  return {median(ms[0]), median(ms[1])};
}

json::object measure(const Case& c, const torch::Device& device, std::int64_t repeats,
                     std::vector<std::string>& failures) {
  const auto ref = c.run(Side::Reference);
  const auto fused = errors(c.run(Side::Fused), ref), aten = errors(c.run(Side::Aten), ref);
  const auto [fused_ms, aten_ms] = time_both(c, device, repeats);
  std::printf("%-34s", c.name.c_str());
  json::object errs, aten_errs;
  for (std::size_t i = 0; i < fused.size(); ++i) {
    std::printf(" %s %.2e (ATen %.2e)", c.outputs[i].c_str(), fused[i], aten[i]);
    errs[c.outputs[i]] = fused[i];
    aten_errs[c.outputs[i]] = aten[i];
    if (!(fused[i] <= 2 * aten[i] + c.floor)) {
      char line[240];
      std::snprintf(line, sizeof line, "%s %s: error %.3g, ATen's %.3g (allowed 2 x ATen's + %.0e)", c.name.c_str(),
                    c.outputs[i].c_str(), fused[i], aten[i], c.floor);
      failures.emplace_back(line);
    }
  }
  std::printf("\n%-34s fused %.3f ms, ATen %.3f ms: %.2fx\n", "", fused_ms, aten_ms, aten_ms / fused_ms);
  return {{"case", c.name},       {"error", errs},      {"aten_error", aten_errs},
          {"fused_ms", fused_ms}, {"aten_ms", aten_ms}, {"speedup", aten_ms / fused_ms}};
}

int bench_kernels(const KernelsArguments& a) {
  const bool cuda_visible = torch::cuda::is_available();
  if (a.device == "cuda" && !cuda_visible) throw RuntimeFailure("bench kernels: --device cuda, but no GPU is visible");
  const torch::Device device(a.device == "cpu" || !cuda_visible ? torch::kCPU : torch::kCUDA);
  const bool fused_kernels = device.is_cpu() || cuda_kernels_compiled();
  const bool epilogues = device.is_cuda() && gemm_epilogues_available();
  std::printf(
      "hpctrain's fused operators on %s (%s; the MLP: %s): add_layer_norm %lld x %lld, cross_entropy %lld x %lld "
      "classes, mlp_gelu_tanh %lld x %lld x %lld; forward+backward, medians of %lld\n",
      device.is_cuda() ? "cuda" : "cpu",
      device.is_cpu() ? "the CPU reference loops"
                      : (fused_kernels ? "hpctrain's CUDA kernels" : "no CUDA kernels compiled: ATen's ops"),
      epilogues ? "cuBLASLt epilogues" : "its own backward over ATen's ops", static_cast<long long>(a.rows),
      static_cast<long long>(a.dim), static_cast<long long>(a.rows), static_cast<long long>(a.classes),
      static_cast<long long>(a.rows), static_cast<long long>(a.dim), static_cast<long long>(4 * a.dim),
      static_cast<long long>(a.repeats));
  const std::vector<Case> cases{
      add_norm_case("float32", torch::kFloat, torch::kFloat, 1e-5, a, device),
      add_norm_case("float32+bfloat16", torch::kFloat, torch::kBFloat16, 1e-5, a, device),
      add_norm_case("float32+float16", torch::kFloat, torch::kHalf, 1e-5, a, device),
      add_norm_case("float32+bfloat16, y of autocast", torch::kFloat, torch::kBFloat16, 1e-2, a, device, true),
      layer_norm_case(a, device),
      add_norm_case("bfloat16", torch::kBFloat16, torch::kBFloat16, 1e-2, a, device),
      add_norm_case("float16", torch::kHalf, torch::kHalf, 2e-3, a, device),
      cross_entropy_case("float32", torch::kFloat, 1e-5, a, device),
      cross_entropy_case("bfloat16", torch::kBFloat16, 1e-5, a, device),
      cross_entropy_case("float16", torch::kHalf, 1e-5, a, device),
      mlp_case("float32", torch::kFloat, 1e-5, a, device),
      mlp_case("bfloat16", torch::kBFloat16, 1e-2, a, device),
      mlp_case("float16", torch::kHalf, 2e-3, a, device)};
  json::array results;
  std::vector<std::string> failures;
  for (const auto& c : cases) results.push_back(measure(c, device, a.repeats, failures));
  std::printf(
      "errors: max |value - float64 reference| / max |reference|; allowed: 2 x ATen's own + the type's floor\n");
  write_json_file(a.json_path, json::object{{"benchmark", "kernels"},
                                            {"device", device.is_cuda() ? "cuda" : "cpu"},
                                            {"fused", fused_kernels},
                                            {"gemm_epilogues", epilogues},
                                            {"rows", a.rows},
                                            {"dim", a.dim},
                                            {"classes", a.classes},
                                            {"repeats", a.repeats},
                                            {"cases", results}});
  for (const auto& f : failures) std::fprintf(stderr, "hpctrain: bench kernels: outside tolerance: %s\n", f.c_str());
  if (!failures.empty()) {
    throw RuntimeFailure("bench kernels: " + std::to_string(failures.size()) + " outputs outside tolerance");
  }
  return 0;
}

}  // namespace

void add_bench_kernels(CLI::App& bench, Commands& commands) {
  auto a = std::make_shared<KernelsArguments>();
  CLI::App* app = bench.add_subcommand("kernels", "hpctrain's fused operators against ATen's: errors and times");
  app->group("Benchmarks");
  app->footer(
      "The residual add + LayerNorm of a Transformer block (models/AddNorm.hpp) on --rows rows of\n"
      "--dim values, for float32, float32 with a bfloat16 or float16 branch (what autocast gives),\n"
      "bfloat16 and float16,\n"
      "and the softmax cross-entropy (models/SoftmaxCrossEntropy.hpp) on --rows rows of --classes\n"
      "logits of float32, bfloat16 and float16, and the Transformer MLP fc2(gelu_tanh(fc1(x))) with\n"
      "--dim inputs and 4 x --dim hidden units (models/FusedMlp.hpp: cuBLASLt epilogues on a GPU),\n"
      "forward and backward: each output's error against\n"
      "a float64 reference of the same inputs, hpctrain's and ATen's, and the time of each\n"
      "(alternating, medians). On a GPU it runs hpctrain's CUDA kernels, on the CPU their reference\n"
      "loops. Fails when an error exceeds twice ATen's own plus the type's rounding floor.");
  app->add_option("--device", a->device, "where to run")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app->add_option("--rows", a->rows, "rows (tokens)")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--dim", a->dim, "values per row of the LayerNorm")
      ->check(integer_at_least(1))
      ->type_name("D")
      ->capture_default_str();
  app->add_option("--classes", a->classes, "logits per row of the cross-entropy")
      ->check(integer_at_least(1))
      ->type_name("C")
      ->capture_default_str();
  app->add_option("--repeats", a->repeats, "timed rounds")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--json", a->json_path, "also write the figures as JSON")->type_name("FILE");
  commands.push_back({app, [a] { return bench_kernels(*a); }});
}

}  // namespace hpctrain
