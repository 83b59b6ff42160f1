// `hpctrain search-merge RUN_DIR`: one leaderboard from a search that ran as shards (a job array).
#include <cstdio>
#include <memory>
#include <string>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "experiment/Experiment.hpp"

namespace hpctrain {

namespace {

int run_search_merge(const std::string& run_dir) {
  Communicator world = Communicator::world();
  ExperimentResult result;
  collective_check(world, [&] {
    if (world.rank() == 0) result = merge_search_shards(run_dir);
  });
  int any = result.any_ok ? 1 : 0;
  world.broadcast(&any, sizeof(any), 0);
  if (world.rank() == 0) {
    std::printf("%s\nreports: %s/\n", result.summary_text.c_str(), run_dir.c_str());
    std::fflush(stdout);
  }
  if (!any) throw CollectiveError("every trial failed (see " + run_dir + ")", 0, 1);
  return 0;
}

}  // namespace

void add_search_merge_command(CLI::App& parent, Commands& commands) {
  auto run_dir = std::make_shared<std::string>();
  CLI::App* app = parent.add_subcommand("search-merge", "join the shards of a search that ran as a job array");
  app->footer(
      "Joins a search that ran as shards (search.shards > 1, e.g. the tasks of a Slurm job array:\n"
      "slurm/search-array.sbatch) into one leaderboard. The shards' run directories are the\n"
      "folders directly under RUN_DIR; RUN_DIR receives search_report.json, leaderboard.csv,\n"
      "leaderboard.md and best_config.json. Trials of a shard that left no report are listed as\n"
      "failed. Exit code 1 when no trial succeeded.");
  app->add_option("RUN_DIR", *run_dir, "the folder that holds the shards' run directories")
      ->required()
      ->type_name("DIR");
  commands.push_back({app, [run_dir] { return run_search_merge(*run_dir); }});
}

}  // namespace hpctrain
