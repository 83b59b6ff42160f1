// `hpctrain predict MODEL_DIR INPUT.h5 ...`: batched inference with an exported model, MPI-parallel.
#include <cstdio>
#include <memory>
#include <string>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "run/Export.hpp"

namespace hpctrain {

namespace {

struct PredictArguments {
  std::string model_dir, input, split = "test", output;
  std::int64_t batch = 256;
};

int run_predict(PredictArguments a) {
  if (a.output.empty()) a.output = a.model_dir + "/predictions_" + a.split;
  Communicator world = Communicator::world();
  const PredictResult r = predict_file(a.model_dir, a.input, a.split, a.output, a.batch, world);
  if (world.rank() == 0) {
    std::printf("predicted %lld samples of %s:%s on %d ranks in %.2f s -> %s, %s\n", static_cast<long long>(r.samples),
                a.input.c_str(), a.split.c_str(), world.size(), r.seconds, r.h5.c_str(), r.csv.c_str());
  }
  return 0;
}

}  // namespace

void add_predict_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<PredictArguments>();
  CLI::App* app = parent.add_subcommand(
      "predict", "batched inference, MPI-parallel: mpirun -np N hpctrain predict MODEL_DIR INPUT.h5");
  app->footer(
      "Batched inference with an exported model (hpctrain export), MPI-parallel over the input's\n"
      "rows: writes PREFIX.h5 and PREFIX.csv (docs/checkpoints.md).");
  app->add_option("MODEL_DIR", a->model_dir, "the exported model's folder")->required()->type_name("DIR");
  app->add_option("INPUT", a->input, "a data set in hpctrain's HDF5 layout")->required()->type_name("FILE.h5");
  app->add_option("--split", a->split, "the input's split to predict")
      ->check(one_of({"test", "train"}))
      ->type_name("SPLIT")
      ->capture_default_str();
  app->add_option("--output", a->output, "output prefix (default: MODEL_DIR/predictions_SPLIT)")->type_name("PREFIX");
  app->add_option("--batch", a->batch, "samples per forward pass")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  commands.push_back({app, [a] { return run_predict(*a); }});
}

}  // namespace hpctrain
