#pragma once
// metrics.jsonl: one JSON object a line, appended and flushed as training goes
// (docs/outputs.md). Only rank 0 writes; other ranks hold a disabled log.
#include <boost/json.hpp>

#include <fstream>
#include <string>

namespace hpctrain {

class MetricsLog {
 public:
  MetricsLog() = default;
  // `append` continues the log of a resumed run.
  explicit MetricsLog(const std::string& path, bool append = false);
  void write(const boost::json::object& line);
  bool enabled() const { return out_.is_open(); }

 private:
  std::ofstream out_;
};

// The whole file; throws RuntimeFailure naming the path when it cannot be read.
std::string read_file(const std::string& path);
// Writes `text` to `path` atomically (temporary file in the same folder, then rename).
void write_file_atomic(const std::string& path, const std::string& text);
// Flushes a file's data to the storage device (fsync), so a rename after it publishes
// complete contents even across a crash. Missing files are ignored.
void sync_file(const std::string& path);
// Creates a folder and its parents; throws RuntimeFailure naming the path on failure.
void make_directories(const std::string& path);

}  // namespace hpctrain
