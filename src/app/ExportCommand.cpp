// `hpctrain export RUN_DIR [--best | --checkpoint FILE] [--output DIR]`: a trained model as safetensors + JSON.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "app/Command.hpp"
#include "checkpoint/Checkpoint.hpp"
#include "comm/Communicator.hpp"
#include "run/Export.hpp"
#include "train/Checkpointer.hpp"
#include "util/Error.hpp"

namespace hpctrain {

namespace {

struct ExportArguments {
  std::string run_dir, checkpoint, output;
  bool best = false;
};

int run_export(ExportArguments a) {
  if (a.run_dir.empty() && a.checkpoint.empty()) throw UsageError("export: name the run directory");
  if (a.output.empty()) a.output = (a.run_dir.empty() ? std::string(".") : a.run_dir) + "/export";
  Communicator world = Communicator::world();
  ExportResult r;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    if (a.best) {
      a.checkpoint = a.run_dir + "/checkpoints/" + kBestCheckpointName;
      if (access(a.checkpoint.c_str(), F_OK) != 0) {
        throw DataError(a.checkpoint + ": no best checkpoint to export (train with checkpoint.keep_best=val_METRIC)");
      }
    }
    if (a.checkpoint.empty()) {
      const auto all = list_checkpoints(a.run_dir + "/checkpoints");
      if (all.empty()) {
        throw DataError(a.run_dir + "/checkpoints: no checkpoint to export (train with checkpoint.at_end)");
      }
      a.checkpoint = all.front();
    }
    r = export_model(a.checkpoint, a.output);
  });
  if (world.rank() == 0) {
    std::printf("exported %s: %lld tensors -> %s, %s\n", r.checkpoint.c_str(), static_cast<long long>(r.tensors),
                r.weights.c_str(), r.description.c_str());
  }
  return 0;
}

}  // namespace

void add_export_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<ExportArguments>();
  CLI::App* app = parent.add_subcommand("export", "write the trained model as safetensors + JSON description");
  app->footer(
      "Writes the trained model of RUN_DIR's newest checkpoint (or best.h5, or FILE) as DIR/model.safetensors\n"
      "and DIR/model.json, a description from which it can be rebuilt. docs/checkpoints.md shows\n"
      "how to load it in Python.");
  app->add_option("RUN_DIR", a->run_dir, "the run's directory (its checkpoints/ folder)")->type_name("DIR");
  CLI::Option* file = app->add_option("--checkpoint", a->checkpoint, "this checkpoint instead of the run's newest")
                          ->type_name("FILE.h5");
  app->add_flag("--best", a->best, "the best epoch's checkpoint (RUN_DIR/checkpoints/best.h5, checkpoint.keep_best)")
      ->excludes(file);
  app->add_option("--output", a->output, "folder to write (default: RUN_DIR/export)")->type_name("DIR");
  commands.push_back({app, [a] { return run_export(*a); }});
}

}  // namespace hpctrain
