#include "experiment/Journal.hpp"

#include <boost/json.hpp>

#include <filesystem>
#include <vector>

#include "config/Resume.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace fs = std::filesystem;

namespace {

// Deletes what a record folder holds (files only: a record has no subfolders). Not
// std::filesystem::remove_all: libtorch exports a copy of it that the dynamic linker binds
// first, and that copy crashes (a call through a null pointer).
void remove_records(const std::string& dir) {
  if (!fs::is_directory(dir)) return;
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path().string());
  for (const auto& file : files) remove_file(file);
}

}  // namespace

std::size_t TaskJournal::open(const std::string& mode, const std::string& resolved_json) {
  const std::string identity = task_identity(resolved_json);
  const std::string identity_path = dir_ + "/config.json";
  if (mode != "none" && mode != "auto") {
    throw ConfigError(
        "checkpoint.resume: a cross-validation or search resumes from the tasks recorded in its run "
        "directory; use auto (or none to start over)");
  }
  done_.clear();
  if (mode == "auto" && fs::is_regular_file(identity_path)) {
    if (read_file(identity_path) != identity) {
      throw ConfigError(dir_ +
                        ": holds the finished tasks of a different config; use another run.dir, or "
                        "checkpoint.resume=none to start over");
    }
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      if (name == "config.json" || entry.path().extension() != ".json") continue;
      try {
        TaskOutcome outcome = parse_task_outcome(read_file(entry.path().string()));
        if (outcome.status != TaskStatus::Preempted) done_.emplace(entry.path().stem().string(), std::move(outcome));
      } catch (const std::exception&) {
        // A file cut short by a crash: its task runs again.
      }
    }
    return done_.size();
  }
  remove_records(dir_);
  make_directories(dir_);
  write_file_atomic(identity_path, identity);
  return 0;
}

std::string TaskJournal::key(int rung, int trial, int repeat, int fold) {
  return "rung" + std::to_string(rung) + "_trial" + std::to_string(trial) + "_" + split_name(repeat, fold);
}

const TaskOutcome* TaskJournal::find(const std::string& key) const {
  const auto it = done_.find(key);
  return it == done_.end() ? nullptr : &it->second;
}

void TaskJournal::record(const std::string& key, const TaskOutcome& outcome, const std::string& text) {
  if (outcome.status == TaskStatus::Preempted) return;
  write_file_atomic(dir_ + "/" + key + ".json", text);
}

}  // namespace hpctrain
