#pragma once
// What a command file gives the command line (app/CommandLine.cpp): its CLI11 definition
// (positionals, typed options and their help, added under a parent) and the action that runs
// once the arguments parsed. One file per command: app/TrainCommand.cpp, app/ImportCommand.cpp, ...
#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace hpctrain {

struct Command {
  Command(CLI::App* app_, std::function<int()> run_, bool usage_when_bare_ = false, std::string member_ = {})
      : app(app_), run(std::move(run_)), usage_when_bare(usage_when_bare_), member(std::move(member_)) {}

  CLI::App* app = nullptr;
  // Runs the command and returns the exit code. Empty for a group (`import`, `bench`), whose
  // subcommands run instead.
  std::function<int()> run;
  // Named with no arguments, it prints its usage and exits 2 instead of running.
  bool usage_when_bare = false;
  // A group's word for its subcommands in messages: "data set kind", "benchmark".
  std::string member;
};
using Commands = std::vector<Command>;

// Each adds its command (or group and its subcommands) under `parent`.
void add_train_command(CLI::App& parent, Commands& commands);
void add_import_command(CLI::App& parent, Commands& commands);
void add_inspect_command(CLI::App& parent, Commands& commands);
void add_config_command(CLI::App& parent, Commands& commands);
void add_export_command(CLI::App& parent, Commands& commands);
void add_predict_command(CLI::App& parent, Commands& commands);
void add_search_merge_command(CLI::App& parent, Commands& commands);
void add_plan_command(CLI::App& parent, Commands& commands);
void add_bench_allreduce(CLI::App& bench, Commands& commands);
void add_bench_io(CLI::App& bench, Commands& commands);
void add_bench_checkpoint(CLI::App& bench, Commands& commands);
void add_bench_activations(CLI::App& bench, Commands& commands);
void add_bench_kernels(CLI::App& bench, Commands& commands);

// Checks of option values before CLI11 converts them. CLI11 reports a failed check as
// "NAME: MESSAGE" and the command line prints "NAME MESSAGE", so each message continues the
// option's name: `--budget needs a positive number, not "x"`.
CLI::Validator positive_number();                     // a number > 0
CLI::Validator open_fraction();                       // a number in (0, 1)
CLI::Validator integer_at_least(std::int64_t least);  // an integer >= least
CLI::Validator one_of(const std::vector<std::string>& choices);

// True on rank 0 of MPI's world: the rank that prints what every rank would print alike.
bool is_root_rank();

}  // namespace hpctrain
