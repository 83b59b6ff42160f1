// `hpctrain bench kernels`: hpctrain's fused operators against ATen's on this machine's device:
// the error of each against a float64 reference of the same rounded inputs (the check), and the
// forward+backward time of each (the benchmark).
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "models/AddNorm.hpp"
#include "util/Error.hpp"

namespace hpctrain {

namespace {

namespace json = boost::json;

struct KernelsArguments {
  std::string device = "auto", json_path;
  std::int64_t rows = 8192, dim = 1024, repeats = 20;
};

// One case: the residual stream's type and the branch's.
struct Case {
  const char* name;
  c10::ScalarType h, r;
  double floor;  // the error allowed besides twice ATen's own: about the type's rounding
};

struct Outputs {
  std::vector<torch::Tensor> values;  // h, y, dx, dr, dweight, dbias
};

using AddNormFn = std::pair<torch::Tensor, torch::Tensor> (*)(const torch::Tensor&, const torch::Tensor&,
                                                              const torch::Tensor&, const torch::Tensor&, double);

struct Inputs {
  torch::Tensor x, r, w, b, dy, dh;
};

Outputs run(AddNormFn fn, const Inputs& in, bool as_double) {
  auto cast = [&](const torch::Tensor& t) { return as_double ? t.to(torch::kDouble) : t; };
  auto x = cast(in.x).detach().requires_grad_(), r = cast(in.r).detach().requires_grad_();
  auto w = cast(in.w).detach().requires_grad_(), b = cast(in.b).detach().requires_grad_();
  auto [h, y] = fn(x, r, w, b, 1e-5);
  torch::autograd::backward({h, y}, {cast(in.dh).to(h.scalar_type()), cast(in.dy).to(y.scalar_type())});
  return {{h.detach(), y.detach(), x.grad(), r.grad(), w.grad(), b.grad()}};
}

// max |a - ref| / max |ref| over each output.
std::vector<double> errors(const Outputs& got, const Outputs& ref) {
  std::vector<double> out;
  for (std::size_t i = 0; i < got.values.size(); ++i) {
    const auto r = ref.values[i].to(torch::kDouble).cpu(), g = got.values[i].to(torch::kDouble).cpu();
    const double scale = std::max(r.abs().max().item<double>(), 1e-30);
    out.push_back((g - r).abs().max().item<double>() / scale);
  }
  return out;
}

void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

// Forward+backward milliseconds of each function, alternating, medians.
std::vector<double> time_both(const std::vector<AddNormFn>& fns, const Inputs& in, std::int64_t repeats) {
  std::vector<std::vector<double>> ms(fns.size());
  const auto device = in.x.device();
  for (std::int64_t i = 0; i < repeats + 2; ++i) {
    for (std::size_t f = 0; f < fns.size(); ++f) {
      sync(device);
      const auto start = std::chrono::steady_clock::now();
      run(fns[f], in, false);
      sync(device);
      const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
      if (i >= 2) ms[f].push_back(took.count());  // two warm-up rounds
    }
  }
  return {median(ms[0]), median(ms[1])};
}

int bench_kernels(const KernelsArguments& a) {
  const bool cuda_visible = torch::cuda::is_available();
  if (a.device == "cuda" && !cuda_visible) throw RuntimeFailure("bench kernels: --device cuda, but no GPU is visible");
  const torch::Device device(a.device == "cpu" || !cuda_visible ? torch::kCPU : torch::kCUDA);
  const bool fused_kernels = device.is_cpu() || cuda_kernels_compiled();
  std::printf("add_layer_norm on %s (%s), %lld x %lld, forward+backward, medians of %lld\n",
              device.is_cuda() ? "cuda" : "cpu",
              device.is_cpu() ? "hpctrain's CPU reference"
                              : (fused_kernels ? "hpctrain's CUDA kernel" : "no CUDA kernels compiled: ATen's ops"),
              static_cast<long long>(a.rows), static_cast<long long>(a.dim), static_cast<long long>(a.repeats));
  std::printf("%-18s %9s %9s %9s %9s %9s %9s %10s %10s %7s\n", "case", "h", "y", "dx", "dr", "dweight", "dbias",
              "fused ms", "ATen ms", "ratio");
  const std::vector<Case> cases{{"float32", torch::kFloat, torch::kFloat, 1e-5},
                                {"float32+bfloat16", torch::kFloat, torch::kBFloat16, 1e-5},
                                {"bfloat16", torch::kBFloat16, torch::kBFloat16, 1e-2},
                                {"float16", torch::kHalf, torch::kHalf, 2e-3}};
  json::array results;
  std::vector<std::string> failures;
  const char* names[] = {"h", "y", "dx", "dr", "dweight", "dbias"};
  for (const auto& c : cases) {
    torch::manual_seed(7);
    const auto o = torch::TensorOptions().device(device);
    Inputs in{torch::randn({a.rows, a.dim}, o).to(c.h), torch::randn({a.rows, a.dim}, o).to(c.r),
              1 + 0.1 * torch::randn({a.dim}, o),       0.1 * torch::randn({a.dim}, o),
              torch::randn({a.rows, a.dim}, o),         torch::randn({a.rows, a.dim}, o)};
    // The reference: the same (rounded) inputs, everything in float64.
    const auto ref =
        run([](const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& w, const torch::Tensor& b,
               double eps) { return std::make_pair(x + r, torch::layer_norm(x + r, {x.size(-1)}, w, b, eps)); },
            {in.x.to(torch::kDouble), in.r.to(torch::kDouble), in.w, in.b, in.dy, in.dh}, true);
    const auto fused = errors(run(add_layer_norm, in, false), ref);
    const auto aten = errors(run(add_layer_norm_unfused, in, false), ref);
    const auto ms = time_both({add_layer_norm, add_layer_norm_unfused}, in, a.repeats);
    std::printf("%-18s", c.name);
    json::object errs, aten_errs;
    for (std::size_t i = 0; i < fused.size(); ++i) {
      std::printf(" %9.2e", fused[i]);
      errs[names[i]] = fused[i];
      aten_errs[names[i]] = aten[i];
      if (!(fused[i] <= 2 * aten[i] + c.floor)) {
        char line[200];
        std::snprintf(line, sizeof line, "%s %s: error %.3g, ATen's %.3g (allowed 2 x ATen's + %.0e)", c.name, names[i],
                      fused[i], aten[i], c.floor);
        failures.emplace_back(line);
      }
    }
    std::printf(" %10.3f %10.3f %7.2f\n", ms[0], ms[1], ms[1] / ms[0]);
    results.push_back(json::object{{"case", c.name},
                                   {"error", errs},
                                   {"aten_error", aten_errs},
                                   {"fused_ms", ms[0]},
                                   {"aten_ms", ms[1]},
                                   {"speedup", ms[1] / ms[0]}});
  }
  std::printf(
      "errors: max |value - float64 reference| / max |reference|; allowed: 2 x ATen's own + the type's floor\n");
  write_json_file(a.json_path, json::object{{"benchmark", "kernels"},
                                            {"device", device.is_cuda() ? "cuda" : "cpu"},
                                            {"fused", fused_kernels},
                                            {"rows", a.rows},
                                            {"dim", a.dim},
                                            {"repeats", a.repeats},
                                            {"add_layer_norm", results}});
  for (const auto& f : failures) std::fprintf(stderr, "hpctrain: bench kernels: outside tolerance: %s\n", f.c_str());
  if (!failures.empty())
    throw RuntimeFailure("bench kernels: " + std::to_string(failures.size()) + " outputs outside tolerance");
  return 0;
}

}  // namespace

void add_bench_kernels(CLI::App& bench, Commands& commands) {
  auto a = std::make_shared<KernelsArguments>();
  CLI::App* app = bench.add_subcommand("kernels", "hpctrain's fused operators against ATen's: errors and times");
  app->group("Benchmarks");
  app->footer(
      "The residual add + LayerNorm of a Transformer block (models/AddNorm.hpp) on --rows rows of\n"
      "--dim values, forward and backward, for float32, float32 with a bfloat16 branch (autocast),\n"
      "bfloat16 and float16: each output's error against a float64 reference of the same inputs,\n"
      "hpctrain's and ATen's, and the time of each (alternating, medians). On a GPU it runs\n"
      "hpctrain's CUDA kernel, on the CPU its reference loops. Fails when an error exceeds twice\n"
      "ATen's own plus the type's rounding floor.");
  app->add_option("--device", a->device, "where to run")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app->add_option("--rows", a->rows, "rows (tokens)")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--dim", a->dim, "values per row")->check(integer_at_least(1))->type_name("D")->capture_default_str();
  app->add_option("--repeats", a->repeats, "timed rounds")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--json", a->json_path, "also write the figures as JSON")->type_name("FILE");
  commands.push_back({app, [a] { return bench_kernels(*a); }});
}

}  // namespace hpctrain
