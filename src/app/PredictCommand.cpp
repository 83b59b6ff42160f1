// `hpctrain predict MODEL_DIR INPUT.h5 ...`: batched inference with an exported model, MPI-parallel.
#include <cstdio>
#include <memory>
#include <string>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "run/Predict.hpp"

namespace hpctrain {

namespace {

int run_predict(PredictOptions o) {
  if (o.prefix.empty()) o.prefix = o.model_dir + "/predictions_" + o.split;
  Communicator world = Communicator::world();
  const PredictResult r = predict_file(o, world);
  if (world.rank() == 0) {
    const std::string layout = r.stages > 1
                                   ? " (" + std::to_string(r.stages) + " stages x " + std::to_string(r.replicas) +
                                         (r.replicas == 1 ? " replica: " : " replicas: ") + r.split_described + ")"
                                   : "";
    std::printf("predicted %lld samples of %s:%s on %d ranks%s in %.2f s -> %s, %s\n",
                static_cast<long long>(r.samples), o.input.c_str(), o.split.c_str(), world.size(), layout.c_str(),
                r.seconds, r.h5.c_str(), r.csv.c_str());
  }
  return 0;
}

}  // namespace

void add_predict_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<PredictOptions>();
  CLI::App* app = parent.add_subcommand(
      "predict", "batched inference, MPI-parallel: mpirun -np N hpctrain predict MODEL_DIR INPUT.h5");
  app->footer(
      "Batched inference with an exported model (hpctrain export), MPI-parallel over the input's\n"
      "rows: writes PREFIX.h5 and PREFIX.csv (docs/checkpoints.md). With --stages P the ranks form\n"
      "P pipeline stages x N/P replicas and each rank loads only its stage's tensors: a model\n"
      "that one rank cannot hold predicts as it trained.");
  app->add_option("MODEL_DIR", a->model_dir, "the exported model's folder")->required()->type_name("DIR");
  app->add_option("INPUT", a->input, "a data set in hpctrain's HDF5 layout")->required()->type_name("FILE.h5");
  app->add_option("--split", a->split, "the input's split to predict")
      ->check(one_of({"test", "train"}))
      ->type_name("SPLIT")
      ->capture_default_str();
  app->add_option("--output", a->prefix, "output prefix (default: MODEL_DIR/predictions_SPLIT)")->type_name("PREFIX");
  app->add_option("--batch", a->batch, "samples per forward pass")
      ->check(integer_at_least(1))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--stages", a->stages, "pipeline stages (the ranks form stages x replicas)")
      ->check(integer_at_least(1))
      ->type_name("P")
      ->capture_default_str();
  app->add_option("--stage-split", a->stage_split,
                  "first block of each stage after the first (default: balanced by parameters)")
      ->delimiter(',')
      ->type_name("B1,B2,...");
  commands.push_back({app, [a] { return run_predict(*a); }});
}

}  // namespace hpctrain
