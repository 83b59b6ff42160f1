#pragma once
// The outcome of one task of a cross-validation or search (one trial on one fold, or on the
// validation holdout), as rank 0 keeps it: parsed once from the JSON text a group's leader
// sends, then read through typed fields by the journal, the halving and the reports. The
// JSON layout (keys and their order) is the one of docs/cv-and-search.md, "task outcome":
// journals, search reports and shards written before stay readable, and what is written
// is byte for byte what an outcome object always gave.
#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hpctrain {

// "preempted" is neither a result nor a failure: the task runs again on resume.
enum class TaskStatus { Ok, Failed, Preempted };

const char* to_string(TaskStatus status);
// Throws DataError for any other text.
TaskStatus parse_task_status(const std::string& text);

// The held-out rows of a task and what the model said about them (cv.save_predictions).
struct HeldOutPredictions {
  std::vector<std::int64_t> index;  // rows of /train, sorted
  std::vector<double> target;       // [N], or [N, S] for S target values per sample
  std::vector<double> loss;         // [N]
  std::vector<double> outputs;      // [N, K] class probabilities, or [N, S] predictions
};

struct TaskOutcome {
  int trial = 0;
  int repeat = 0;
  int fold = -1;  // -1: the validation holdout
  std::int64_t epochs = 0;
  // False for a placeholder of a task that never ran anywhere (a shard of a search that left
  // no report): then only trial, repeat, fold, rung, epochs, status and error are written.
  bool ran = true;
  int group = 0;
  int ranks = 0;
  std::int64_t train_samples = 0;
  std::int64_t held_out_samples = 0;
  TaskStatus status = TaskStatus::Failed;
  std::string error;  // failed or preempted

  // Status ok only.
  std::optional<std::vector<std::vector<std::int64_t>>> confusion;  // classification; rows: true labels
  boost::json::object metrics;  // eval/Scores' object with "loss" (numbers or null, count, per_class)
  double train_seconds = 0;     // the slowest rank of the group
  double samples_per_s = 0;
  std::int64_t parameters = 0;
  std::int64_t steps = 0;
  std::string stop_reason;
  boost::json::array epoch_records;  // the epoch objects of report.json
  std::optional<HeldOutPredictions> predictions;

  double wall_seconds = 0;
  std::optional<int> rung;  // set by rank 0 once the rung is known (search reports)
  // Rank 0 wrote the predictions the outcome carried to their file and dropped them. The
  // reports have always laid such an outcome out with "rung" where "predictions" was (before
  // "wall_seconds"; Boost.JSON's erase moves the last key into the gap), and keep doing so.
  bool predictions_dropped = false;

  bool ok() const { return status == TaskStatus::Ok; }
  // A scalar metric; NaN when the outcome has no such number (absent, null or not ok).
  double metric(const std::string& name) const;
};

boost::json::object to_json(const TaskOutcome& outcome);
// Throws DataError naming the missing or mistyped key.
TaskOutcome task_outcome_from_json(const boost::json::object& object);
// The one-line text that travels from a group's leader to rank 0 and into the journal.
std::string to_json_text(const TaskOutcome& outcome);
// Throws DataError for text that is not an outcome (invalid JSON included).
TaskOutcome parse_task_outcome(const std::string& text);

// "holdout" or "repeatR_foldF": names prediction files and journal records.
std::string split_name(int repeat, int fold);

// A JSON number as a double (integers too); NaN for anything else, null included.
double json_number(const boost::json::value& value);

}  // namespace hpctrain
