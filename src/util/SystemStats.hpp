#pragma once
// Process and host figures read from the operating system.
#include <cstdint>

namespace hpctrain {

std::int64_t peak_rss_bytes();     // high-water mark of resident memory
std::int64_t current_rss_bytes();  // resident memory now
double load_average_1min();
double wall_seconds();  // monotonic clock

}  // namespace hpctrain
