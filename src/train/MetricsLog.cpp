#include "train/MetricsLog.hpp"

#include "util/Json.hpp"

namespace hpctrain {

MetricsLog::MetricsLog(const std::string& path, bool append) : out_(path, append) {}

void MetricsLog::write(const boost::json::object& line) {
  out_.append(compact_json(line) + '\n');
}

void MetricsLog::sync() {
  out_.sync();
}

void MetricsLog::close() {
  out_.close();
}

}  // namespace hpctrain
