#pragma once
// Process and host figures read from the operating system.
#include <cstdint>
#include <string>

namespace hpctrain {

std::int64_t peak_rss_bytes();     // high-water mark of resident memory
std::int64_t current_rss_bytes();  // resident memory now
// Resident anonymous memory now (RssAnon): what a memory cgroup charges a process for, without
// the shared libraries' file pages.
std::int64_t anonymous_rss_bytes();
// Bytes in use on the C heap (glibc's small blocks and mmapped ones, every arena): what
// LibTorch's CPU tensors hold. mallinfo2 walks the arenas' free lists: microseconds, not free.
std::int64_t heap_in_use();
double load_average_1min();
// The current time in UTC, ISO 8601 to the second ("2026-12-05T21:30:00Z").
std::string utc_timestamp();
double wall_seconds();  // monotonic clock

}  // namespace hpctrain
