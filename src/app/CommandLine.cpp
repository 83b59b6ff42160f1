#include "app/CommandLine.hpp"

#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "app/Command.hpp"
#include "run/RunReport.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// CLI11's help, laid out as hpctrain's always was: the usage line first, then what the
// command does, its arguments, options and subcommands, and the footer.
class HelpFormatter : public CLI::Formatter {
 public:
  HelpFormatter() {
    label("Usage", "usage");
    label("SUBCOMMAND", "COMMAND");
    label("Positionals", "Arguments");
    column_width(30);
  }
  std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode mode) const override {
    if (mode == CLI::AppFormatMode::Sub) return make_expanded(app);
    std::string text = make_usage(app, name);
    const std::string description = make_description(app);
    if (!description.empty()) text += "\n" + description;
    text += make_positionals(app) + make_groups(app, mode) + make_subcommands(app, mode);
    if (!app->get_footer().empty()) text += "\n" + make_footer(app);
    return text;
  }
};

const char* kDescription =
    "hpctrain: data-parallel training on LibTorch over MPI ranks, with cross-validation and\n"
    "hyperparameter search over groups of ranks.";

const char* kFooter =
    "Run `hpctrain COMMAND --help` for one command's arguments and options; docs/ has the rest.\n"
    "Exit codes: 0 success, 1 runtime failure, 2 usage or config error, 3 data error.";

const char* kBenchFooter =
    "Each benchmark prints its figures with their formulas next to a baseline measured in the\n"
    "same run (alternating, medians over repeats) and checks its own results (docs/benchmarks.md).";

// The help of `app`, named `name` in its usage line ("hpctrain import csv").
void print_help(const CLI::App& app, const std::string& name) {
  if (is_root_rank()) {
    std::printf("%s", app.get_formatter()->make_help(&app, name, CLI::AppFormatMode::Normal).c_str());
  }
}

int print_version() {
  if (is_root_rank()) std::printf("hpctrain %s\n%s", HPCTRAIN_VERSION_STRING, software_versions_text().c_str());
  return 0;
}

// `help [COMMAND ...]`: the help of the command the words name ("import csv"), or the root's.
int help_about(const CLI::App& root, const std::vector<std::string>& words) {
  const CLI::App* about = &root;
  std::string named;
  for (const std::string& word : words) {
    named += (named.empty() ? "" : " ") + word;
    const auto found =
        about->get_subcommands([&](const CLI::App* s) { return s->get_name() == word && !s->get_group().empty(); });
    if (found.empty()) throw CommandUsageError("help: no command \"" + named + "\"", "help");
    about = found.front();
  }
  print_help(*about, named.empty() ? root.get_name() : root.get_name() + " " + named);
  return 0;
}

void add_help_command(CLI::App& root, Commands& commands) {
  auto words = std::make_shared<std::vector<std::string>>();
  CLI::App* app = root.add_subcommand("help", "this text, or with COMMAND that command's help");
  app->add_option("COMMAND", *words, "a command, or a group and its subcommand (`help import csv`)");
  commands.push_back({app, [&root, words] { return help_about(root, *words); }});
}

// Every command, in the order `hpctrain --help` lists them.
void define_commands(CLI::App& root, Commands& commands) {
  add_import_command(root, commands);
  add_train_command(root, commands);
  add_inspect_command(root, commands);
  add_config_command(root, commands);
  add_export_command(root, commands);
  add_predict_command(root, commands);
  add_search_merge_command(root, commands);
  add_plan_command(root, commands);
  CLI::App* bench = root.add_subcommand("bench", "micro-benchmarks: allreduce, io, checkpoint, activations, kernels");
  bench->require_subcommand(0, 1);
  commands.push_back({bench, {}, true, "benchmark"});
  add_bench_allreduce(*bench, commands);
  add_bench_io(*bench, commands);
  add_bench_checkpoint(*bench, commands);
  add_bench_activations(*bench, commands);
  add_bench_kernels(*bench, commands);
  bench->footer(kBenchFooter);
  add_help_command(root, commands);
  CLI::App* version = root.add_subcommand("version", "the same as --version");
  version->group("");  // hidden: --version is the documented spelling
  commands.push_back({version, print_version});
}

// The subcommands the parse selected, outermost first (empty: the root alone).
std::vector<CLI::App*> selected_path(CLI::App& root) {
  std::vector<CLI::App*> path;
  for (CLI::App* app = &root; !app->get_subcommands().empty();) {
    app = app->get_subcommands().front();
    path.push_back(app);
  }
  return path;
}

std::string names(const std::vector<CLI::App*>& path) {
  std::string text;
  for (const CLI::App* app : path) text += (text.empty() ? "" : " ") + app->get_name();
  return text;
}

// A usage error naming the command, e.g. "import csv: --label is required".
CommandUsageError usage_error(const std::vector<CLI::App*>& path, const std::string& message) {
  return CommandUsageError(path.empty() ? message : names(path) + ": " + message, names(path));
}

// A parse error as one line. CLI11 writes a failed check as "NAME: MESSAGE", and our checks'
// messages continue the name (app/Command.hpp).
std::string parse_error_message(const CLI::ParseError& e) {
  std::string message = e.what();
  if (dynamic_cast<const CLI::ValidationError*>(&e) != nullptr) {
    const auto colon = message.find(": ");
    if (colon != std::string::npos) message.replace(colon, 2, " ");
  }
  std::replace(message.begin(), message.end(), '\n', ' ');
  return message;
}

// The visible subcommands of a group, as "a, b, c".
std::string member_list(const CLI::App& group) {
  std::string list;
  for (const CLI::App* sub : group.get_subcommands([](const CLI::App* s) { return !s->get_group().empty(); })) {
    list += (list.empty() ? "" : ", ") + sub->get_name();
  }
  return list;
}

// What is left over after the parse (an unknown option or a stray argument), as a UsageError.
void refuse_leftovers(const std::vector<CLI::App*>& path, const CLI::App& selected, const Command* group) {
  const std::vector<std::string> left = selected.remaining();
  if (left.empty()) return;
  const std::string& first = left.front();
  if (first.size() > 1 && first[0] == '-') throw usage_error(path, "unknown option " + first);
  if (group != nullptr) {
    throw usage_error(path, "unknown " + group->member + " \"" + first + "\" (known: " + member_list(selected) + ")");
  }
  throw usage_error(path, "unexpected argument \"" + first + "\"");
}

}  // namespace

bool is_root_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank == 0;
}

int run_command_line(const std::vector<std::string>& args) {
  CLI::App root(kDescription, "hpctrain");
  root.formatter(std::make_shared<HelpFormatter>());
  root.allow_extras();  // left over arguments are refused below, with hpctrain's messages
  root.require_subcommand(0, 1);
  root.group("Commands");  // inherited by the commands
  bool version = false;
  root.add_flag("--version", version, "LibTorch, MPI and HDF5 versions; CUDA and NCCL support");
  Commands commands;
  define_commands(root, commands);
  root.footer(kFooter);
  commands.push_back({&root, {}, true, "command"});

  if (args.empty()) {
    print_help(root, "hpctrain");
    return 2;
  }
  for (const Command& c : commands) {  // `plan`, `config`, `bench` alone print their usage
    if (args.size() == 1 && c.usage_when_bare && c.app->get_parent() == &root && args[0] == c.app->get_name()) {
      print_help(*c.app, "hpctrain " + args[0]);
      return 2;
    }
  }
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    root.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    if (is_root_rank()) std::printf("%s", root.help().c_str());  // the selected command's help
    return 0;
  } catch (const CLI::ParseError& e) {
    throw usage_error(selected_path(root), parse_error_message(e));
  }
  const std::vector<CLI::App*> path = selected_path(root);
  CLI::App& selected = path.empty() ? root : *path.back();
  const auto command =
      std::find_if(commands.begin(), commands.end(), [&](const Command& c) { return c.app == &selected; });
  if (command == commands.end()) throw RuntimeFailure("command line: no action for \"" + names(path) + "\"");
  const bool group = !command->run;
  refuse_leftovers(path, selected, group ? &*command : nullptr);
  if (version) return print_version();
  if (!group) return command->run();
  if (command->usage_when_bare && !path.empty()) {
    print_help(selected, "hpctrain " + names(path));
    return 2;
  }
  throw usage_error(path, "name the " + command->member + " (" + member_list(selected) + ")");
}

// --- checks of option values -----------------------------------------------------------

CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& value) {
        char* end = nullptr;
        errno = 0;
        const double x = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0' || errno != 0 || !(x > 0)) {
          return "needs a positive number, not \"" + value + "\"";
        }
        return std::string();
      },
      "POSITIVE");
}

CLI::Validator open_fraction() {
  return CLI::Validator(
      [](std::string& value) {
        char* end = nullptr;
        const double x = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0' || !(x > 0) || !(x < 1)) {
          return "expects a number in (0, 1), found \"" + value + "\"";
        }
        return std::string();
      },
      "(0,1)");
}

CLI::Validator integer_at_least(std::int64_t least) {
  return CLI::Validator(
      [least](std::string& value) {
        char* end = nullptr;
        errno = 0;
        const long long x = std::strtoll(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0' || errno != 0 || x < least) {
          return "expects an integer >= " + std::to_string(least) + ", found \"" + value + "\"";
        }
        return std::string();
      },
      ">=" + std::to_string(least));
}

CLI::Validator one_of(const std::vector<std::string>& choices) {
  std::string list, braces;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    list += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
    braces += (i == 0 ? "" : ",") + choices[i];
  }
  return CLI::Validator(
      [choices, list](std::string& value) {
        if (std::find(choices.begin(), choices.end(), value) != choices.end()) return std::string();
        return "expects " + list + ", found \"" + value + "\"";
      },
      "{" + braces + "}");
}

}  // namespace hpctrain
