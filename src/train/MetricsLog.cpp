#include "train/MetricsLog.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {

MetricsLog::MetricsLog(const std::string& path, bool append)
    : out_(path, std::ios::out | (append ? std::ios::app : std::ios::trunc)) {
  if (!out_) throw RuntimeFailure(path + ": cannot write metrics log: " + std::strerror(errno));
}

void MetricsLog::write(const boost::json::object& line) {
  if (!out_.is_open()) return;
  out_ << compact_json(line) << '\n';
  out_.flush();
}

}  // namespace hpctrain
