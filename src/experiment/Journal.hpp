#pragma once
// Rank 0's record of an experiment's finished tasks, one file each in RUN_DIR/tasks
// (rungR_trialT_repeatP_foldF.json or rungR_trialT_holdout.json: the outcome's JSON, next to
// config.json, the config they belong to), so a preempted or killed cross-validation or
// search resumes without running them again (docs/cv-and-search.md, "Preemption and
// resuming").
#include <boost/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "experiment/TaskOutcome.hpp"
#include "util/Files.hpp"

namespace hpctrain {

class TaskJournal {
 public:
  explicit TaskJournal(std::string dir) : dir_(std::move(dir)) {}

  // checkpoint.resume `mode`: none starts a fresh record (the folder is emptied); auto
  // reuses one made for the same config (config/Resume.hpp task_identity: the
  // config less its keys that are free on resume). Returns the number of finished
  // tasks loaded. A record that is not an ok or failed outcome (a file cut short by a crash)
  // is left out: its task runs again. Throws ConfigError for another mode, or for a record of
  // a different config.
  std::size_t open(const std::string& mode, const std::string& resolved_json);

  // The record of one task: "rung" R "_trial" T "_" split_name(repeat, fold).
  static std::string key(int rung, int trial, int repeat, int fold);
  // A finished task's outcome (as recorded: without a rung), or nullptr.
  const TaskOutcome* find(const std::string& key) const;
  // Writes the outcome of a task as it arrives (atomically): `text` as the group's leader sent
  // it, so the record holds its bytes (JSON's -0 would read back as 0); `outcome` is that text
  // parsed. A preempted task is not a result and is not written.
  void record(const std::string& key, const TaskOutcome& outcome, const std::string& text);

  // asha and tpe: the order of hand-outs and results (AsyncSearch's events), one JSON object
  // a line in events.jsonl. events() is what open() loaded (a line cut short by a crash ends
  // it); append_event adds one line as it happens; rewrite_events replaces the file.
  const boost::json::array& events() const { return events_; }
  void append_event(const boost::json::object& event);
  void rewrite_events(const boost::json::array& events);

 private:
  std::string dir_;
  std::map<std::string, TaskOutcome> done_;
  boost::json::array events_;
  AppendLog events_log_;
};

}  // namespace hpctrain
