#pragma once
// metrics.jsonl: one JSON object a line, appended as training goes (docs/outputs.md). Every
// write is checked (a full disk is an error naming the file, and the line cut short is cut
// off again); the lines are fsynced at epoch ends and on close. Only rank 0 writes; other
// ranks hold a disabled log.
#include <boost/json.hpp>

#include <cstdint>
#include <string>

#include "util/Files.hpp"

namespace hpctrain {

class MetricsLog {
 public:
  MetricsLog() = default;
  // `append` continues the log of a resumed run.
  explicit MetricsLog(const std::string& path, bool append = false);
  void write(const boost::json::object& line);
  // Makes the lines written so far durable (fsync).
  void sync();
  // fsync and close, checked; a disabled or closed log does nothing.
  void close();
  bool enabled() const { return out_.is_open(); }
  // The `step` of the last step line written (0 before the first): where other lines
  // written between them (the system monitor's) stand in the run.
  std::int64_t last_step() const { return last_step_; }

 private:
  AppendLog out_;
  std::int64_t last_step_ = 0;
};

}  // namespace hpctrain
