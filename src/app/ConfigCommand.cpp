// `hpctrain config --docs | CONFIG [key.path=value ...]`: the config reference, or a resolved config.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "config/Schema.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "run/RunDriver.hpp"
#include "util/Error.hpp"

namespace hpctrain {

namespace {

struct ConfigArguments {
  bool docs = false;
  std::string config;
  std::vector<std::string> overrides;
};

int run_config(const ConfigArguments& a) {
  if (a.docs) {
    if (is_root_rank()) std::printf("%s", config_reference_markdown().c_str());
    return 0;
  }
  if (a.config.empty()) throw UsageError("config: name a config file, or --docs for the reference");
  Communicator world = Communicator::world();
  const LaunchEnvironment launch = LaunchEnvironment::detect();
  ResolvedConfig resolved;
  collective_check(world, [&] { resolved = load_run_config(a.config, a.overrides, launch); });
  if (world.rank() == 0) std::printf("%s", resolved.resolved_json.c_str());
  return 0;
}

}  // namespace

void add_config_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<ConfigArguments>();
  CLI::App* app = parent.add_subcommand("config", "print the config reference (--docs) or a resolved config");
  app->footer(
      "--docs prints the reference of every config key (docs/config.md is generated from it);\n"
      "with a file, prints the resolved config after defaults and overrides, as a run writes it\n"
      "to RUN_DIR/config.json.");
  CLI::Option* docs = app->add_flag("--docs", a->docs, "the reference of every key, in Markdown");
  app->add_option("CONFIG", a->config, "a config file (JSON)")->type_name("FILE.json")->excludes(docs);
  app->add_option("OVERRIDES", a->overrides, "key.path=value: config keys set over the file's")
      ->type_name("KEY=VALUE")
      ->excludes(docs);
  commands.push_back({app, [a] { return run_config(*a); }, true});
}

}  // namespace hpctrain
