// `hpctrain bench activations CONFIG`: the activation memory and step time of a model without
// and with gradient checkpointing, with a check that both give the same gradients.
#include <torch/torch.h>

#include <cstdio>
#include <memory>

#include "app/Command.hpp"
#include "app/Measurement.hpp"
#include "config/Schema.hpp"
#include "models/Model.hpp"
#include "util/Error.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

namespace {

struct ActivationsArguments {
  std::string config;
  std::vector<std::string> overrides;
  std::vector<std::int64_t> shape{1, 28, 28};
  std::int64_t classes = 10, steps = 5, every = 1;
};

struct Measured {
  double activation_bytes, step_ms;
  std::vector<torch::Tensor> grads;
  std::int64_t parameters;
};

// Both models (same initial parameters) step in alternation, so machine noise hits both.
std::vector<Measured> measure(const ActivationsArguments& a, const ModelConfig& model_config, std::int64_t batch) {
  std::vector<std::int64_t> input_shape{batch};
  input_shape.insert(input_shape.end(), a.shape.begin(), a.shape.end());
  torch::manual_seed(3);
  const auto x = torch::randn(input_shape);
  const auto y = torch::randint(0, a.classes, {batch});
  auto make = [&](std::int64_t checkpoint_every) {
    ModelConfig mc = model_config;
    mc.checkpoint_every = checkpoint_every;
    torch::manual_seed(1);
    auto model = build_model(mc, InputSpec{a.shape, a.classes});
    model->train();
    return model;
  };
  std::vector<ModelPtr> models{make(0), make(a.every)};
  std::vector<std::vector<double>> act(2), ms(2);
  for (std::int64_t s = 0; s <= a.steps; ++s) {  // step 0 warms up (allocates the gradients)
    for (std::size_t m = 0; m < 2; ++m) {
      for (auto& p : models[m]->parameters()) {
        if (p.grad().defined()) p.mutable_grad().zero_();
      }
      torch::manual_seed(7 + s);
      const std::int64_t before = heap_in_use();
      const double t0 = wall_seconds();
      auto loss = torch::nn::functional::cross_entropy(models[m]->forward(x), y);
      const std::int64_t after = heap_in_use();
      loss.backward();
      const double t1 = wall_seconds();
      if (s > 0) {
        act[m].push_back(static_cast<double>(after - before));
        ms[m].push_back(1000.0 * (t1 - t0));
      }
    }
  }
  std::vector<Measured> rows;
  for (std::size_t m = 0; m < 2; ++m) {
    Measured r{median(act[m]), median(ms[m]), {}, parameter_count(*models[m])};
    for (auto& p : models[m]->parameters()) r.grads.push_back(p.grad().clone());
    rows.push_back(std::move(r));
  }
  return rows;
}

int bench_activations(const ActivationsArguments& a) {
  use_default_threads();
  const ResolvedConfig rc = load_config(a.config, a.overrides);
  const std::int64_t batch = rc.config.train.batch_size;
  const std::vector<Measured> rows = measure(a, rc.config.model, batch);
  const Measured &plain = rows[0], &checkpointed = rows[1];
  bool same = plain.grads.size() == checkpointed.grads.size();
  for (std::size_t i = 0; same && i < plain.grads.size(); ++i) {
    same = torch::equal(plain.grads[i], checkpointed.grads[i]);
  }
  std::printf("model %s, %lld parameters, batch %lld, input %s, %lld steps (medians)\n", rc.config.model.name.c_str(),
              static_cast<long long>(plain.parameters), static_cast<long long>(batch), a.config.c_str(),
              static_cast<long long>(a.steps));
  std::printf("%-28s %16s %14s\n", "", "activations MB", "step ms");
  std::printf("%-28s %16.1f %14.1f\n", "plain", plain.activation_bytes / 1048576.0, plain.step_ms);
  std::printf("%-28s %16.1f %14.1f\n", ("checkpoint every " + std::to_string(a.every) + " block(s)").c_str(),
              checkpointed.activation_bytes / 1048576.0, checkpointed.step_ms);
  std::printf("activation memory %.1f%% less, step time %+.1f%%; gradients %s\n",
              100.0 * (1.0 - checkpointed.activation_bytes / std::max(1.0, plain.activation_bytes)),
              100.0 * (checkpointed.step_ms / plain.step_ms - 1.0), same ? "identical" : "DIFFER");
  if (!same) throw RuntimeFailure("bench activations: checkpointing changed the gradients");
  return 0;
}

}  // namespace

void add_bench_activations(CLI::App& bench, Commands& commands) {
  auto a = std::make_shared<ActivationsArguments>();
  CLI::App* app = bench.add_subcommand("activations", "activation memory and step time with gradient checkpointing");
  app->group("Benchmarks");
  app->footer(
      "The model of CONFIG (one process, random inputs of --shape and train.batch_size rows)\n"
      "trained for --steps steps without and with gradient checkpointing of every --every-th\n"
      "block: the heap bytes the forward pass leaves for backward (activations), and the\n"
      "forward+backward time, medians over the steps. Checked: both give the same gradients.");
  app->add_option("CONFIG", a->config, "the config whose model is measured")->required()->type_name("FILE.json");
  app->add_option("OVERRIDES", a->overrides, "key.path=value: config keys set over the file's")->type_name("KEY=VALUE");
  app->add_option("--shape", a->shape, "one sample's shape")
      ->delimiter(',')
      ->allow_extra_args(false)
      ->check(integer_at_least(1))
      ->option_text("C,H,W=1,28,28");
  app->add_option("--classes", a->classes, "the model's outputs (labels drawn from [0, K))")
      ->check(integer_at_least(1))
      ->type_name("K")
      ->capture_default_str();
  app->add_option("--steps", a->steps, "measured steps (after one warm-up step)")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--every", a->every, "checkpoint every N-th block")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  commands.push_back({app, [a] { return bench_activations(*a); }});
}

}  // namespace hpctrain
