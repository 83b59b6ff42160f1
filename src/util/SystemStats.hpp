#pragma once
// Process and host figures read from the operating system.
#include <cstdint>

namespace hpctrain {

std::int64_t peak_rss_bytes();     // high-water mark of resident memory
std::int64_t current_rss_bytes();  // resident memory now
// Bytes in use on the C heap (glibc's small blocks and mmapped ones, every arena): what
// LibTorch's CPU tensors hold. mallinfo2 walks the arenas' free lists: microseconds, not free.
std::int64_t heap_in_use();
double load_average_1min();
double wall_seconds();  // monotonic clock

}  // namespace hpctrain
