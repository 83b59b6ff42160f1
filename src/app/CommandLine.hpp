#pragma once
// The `hpctrain` command line: every command defined once on CLI11 (app/Command.hpp), its
// `--help` generated from that definition, usage errors raised as UsageError (exit code 2)
// with one line naming the command and what is wrong. Only rank 0 prints help.
#include <string>
#include <utility>
#include <vector>

#include "util/Error.hpp"

namespace hpctrain {

// A usage error of one command ("import csv"), whose --help the top level points to.
class CommandUsageError : public UsageError {
 public:
  CommandUsageError(const std::string& message, std::string command)
      : UsageError(message), command_(std::move(command)) {}
  const std::string& command() const { return command_; }

 private:
  std::string command_;
};

// Parses `args` (argv without the program name) and runs the command they name. Returns the
// exit code; throws UsageError for bad usage and whatever the command throws.
int run_command_line(const std::vector<std::string>& args);

}  // namespace hpctrain
