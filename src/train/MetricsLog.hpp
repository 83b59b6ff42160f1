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

}  // namespace hpctrain
