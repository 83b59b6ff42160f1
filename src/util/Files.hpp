#pragma once
// Whole-file reads and durable writes, the one place files are published atomically.
#include <string>

namespace hpctrain {

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
