#pragma once
// Whole-file reads and durable writes: the one place files are published.
//
// Every file hpctrain writes goes through here (or through write_hdf5_atomically in io/,
// which publishes with publish_file): the data goes to `path + ".tmp"` in the same folder,
// every write, flush and close is checked, the file is fsynced, renamed over `path`, and the
// folder is fsynced, so after a crash a reader finds the complete new file or the previous
// one, never a mixture. Any failure is one RuntimeFailure naming the path and the OS error
// (strerror), and the temporary file is removed: the previous file under `path` stays.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hpctrain {

// The whole file; throws RuntimeFailure naming the path when it cannot be read.
std::string read_file(const std::string& path);
// Writes `text` to `path` atomically and durably (above).
void write_file_atomic(const std::string& path, const std::string& text);
// The same for a file made of pieces written one after the other (no copy into one buffer).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);
// The temporary name a durable write of `path` uses (same folder, so the rename is atomic).
std::string temporary_path(const std::string& path);
// The second half of a durable write whose data a library wrote and closed (HDF5):
// fsyncs `tmp`, renames it over `path` and fsyncs the folder. On failure removes `tmp`.
void publish_file(const std::string& tmp, const std::string& path);
// One positioned piece of a file.
struct FilePiece {
  std::int64_t offset = 0;
  std::string_view bytes;
};
// Writes `pieces` at their offsets into `path` (each positioned write checked), fsyncs and
// closes it, checked. `size` >= 0: creates or truncates the file and sets its length first
// (what nobody writes stays a hole); < 0: the file must exist (other ranks write the rest).
// Throws RuntimeFailure naming the path and the OS error.
void write_pieces(const std::string& path, const std::vector<FilePiece>& pieces, std::int64_t size = -1);
// `bytes` bytes at `offset` of `path`; throws RuntimeFailure naming it (a short file too).
std::string read_piece(const std::string& path, std::int64_t offset, std::int64_t bytes);
// fsync of a file's data; throws RuntimeFailure naming the path (a missing file included).
void sync_file(const std::string& path);
// fsync of a folder, which makes a rename or a new name in it durable.
void sync_directory(const std::string& dir);
// The folder part of `path` ("." when there is none).
std::string parent_directory(const std::string& path);
// Deletes a file; throws RuntimeFailure naming it unless it is gone afterwards (a missing
// file is not an error).
void remove_file(const std::string& path);
// Removes a file on an error path, where a second error must not replace the first.
void discard_file(const std::string& path) noexcept;
// Creates a folder and its parents; throws RuntimeFailure naming the path on failure.
void make_directories(const std::string& path);

// A log appended line by line (metrics.jsonl). Each append writes the whole line or fails
// with an error naming the path; a line cut short by a full disk is cut off again, so the
// file keeps only whole lines. sync() makes the appended lines durable (called at epoch
// ends); close() syncs and closes, checked. The destructor closes without checks.
class AppendLog {
 public:
  AppendLog() = default;
  // `append` keeps what the file holds; otherwise it starts empty.
  AppendLog(const std::string& path, bool append);
  AppendLog(AppendLog&& o) noexcept;
  AppendLog& operator=(AppendLog&& o) noexcept;
  AppendLog(const AppendLog&) = delete;
  AppendLog& operator=(const AppendLog&) = delete;
  ~AppendLog();

  bool is_open() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }
  void append(const std::string& text);
  void sync();
  void close();

 private:
  int fd_ = -1;
  std::string path_;
  std::int64_t size_ = 0;  // bytes of whole lines written so far
};

}  // namespace hpctrain
