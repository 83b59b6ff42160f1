#include "train/MetricsLog.hpp"

#include "util/Json.hpp"

namespace hpctrain {

MetricsLog::MetricsLog(const std::string& path, bool append) : out_(path, append) {}

void MetricsLog::write(const boost::json::object& line) {
  out_.append(compact_json(line) + '\n');
  if (const auto* type = line.if_contains("type"); type && *type == "step" && line.contains("step")) {
    last_step_ = line.at("step").to_number<std::int64_t>();
  }
}

void MetricsLog::sync() {
  out_.sync();
}

void MetricsLog::close() {
  out_.close();
}

}  // namespace hpctrain
