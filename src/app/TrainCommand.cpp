// `hpctrain train CONFIG [key.path=value ...]`: the command line of a run; run/RunDriver runs it.
#include <memory>
#include <string>
#include <vector>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "run/RunDriver.hpp"

namespace hpctrain {

namespace {

struct TrainArguments {
  std::string config;
  std::vector<std::string> overrides;
};

const char* kTrainFooter =
    "Trains the model that CONFIG describes, data-parallel over every MPI rank:\n"
    "  mpirun -np 4 build/hpctrain train configs/fashion_mnist_cnn.json train.epochs=5\n"
    "With cv.folds >= 2 it runs a k-fold cross-validation, with search.method a\n"
    "hyperparameter search, over groups of cv.ranks_per_group ranks (docs/cv-and-search.md):\n"
    "  mpirun -np 4 build/hpctrain train configs/fashion_mnist_cnn_cv.json\n"
    "Writes RUN_DIR (run.dir) with config.json, metrics.jsonl and report.json.";

}  // namespace

void add_train_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<TrainArguments>();
  CLI::App* app =
      parent.add_subcommand("train", "train data-parallel over the MPI ranks: mpirun -np N hpctrain train CONFIG");
  app->footer(kTrainFooter);
  app->add_option("CONFIG", a->config, "the run's config file (JSON)")->required()->type_name("FILE.json");
  app->add_option("OVERRIDES", a->overrides,
                  "key.path=value: config keys set over the file's, with the same checks\n"
                  "(docs/config.md lists every key)")
      ->type_name("KEY=VALUE");
  commands.push_back({app, [a] { return drive_run(a->config, a->overrides, Communicator::world()); }});
}

}  // namespace hpctrain
