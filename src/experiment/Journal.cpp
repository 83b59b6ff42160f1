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

// The events up to the first line that is not a whole JSON object.
boost::json::array read_events(const std::string& text) {
  boost::json::array events;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    if (end == std::string::npos) break;  // no newline: cut short
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(text.substr(start, end - start), ec);
    if (ec || !v.is_object()) break;
    events.push_back(std::move(v));
    start = end + 1;
  }
  return events;
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
  events_.clear();
  events_log_.close();
  if (mode == "auto" && fs::is_regular_file(identity_path)) {
    if (fs::is_regular_file(dir_ + "/events.jsonl")) events_ = read_events(read_file(dir_ + "/events.jsonl"));
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

void TaskJournal::append_event(const boost::json::object& event) {
  if (!events_log_.is_open()) events_log_ = AppendLog(dir_ + "/events.jsonl", true);
  events_log_.append(compact_json(event) + "\n");
  events_log_.sync();
}

void TaskJournal::rewrite_events(const boost::json::array& events) {
  events_log_.close();
  std::string text;
  for (const auto& e : events) text += compact_json(e) + "\n";
  write_file_atomic(dir_ + "/events.jsonl", text);
}

void TaskJournal::record(const std::string& key, const TaskOutcome& outcome, const std::string& text) {
  if (outcome.status == TaskStatus::Preempted) return;
  write_file_atomic(dir_ + "/" + key + ".json", text);
}

}  // namespace hpctrain
