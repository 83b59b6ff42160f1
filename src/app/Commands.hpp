#pragma once
// The `hpctrain` subcommands. Each returns the process exit code.
#include <string>
#include <vector>

namespace hpctrain {

int run_command(const std::vector<std::string>& args);
std::string usage_text();

}  // namespace hpctrain
