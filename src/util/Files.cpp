#include "util/Files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/Error.hpp"

namespace hpctrain {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what, int error) {
  throw RuntimeFailure(path + ": " + what + ": " + std::strerror(error));
}

// Writes all `size` bytes (write() may write fewer); throws naming `path`.
void write_all(int fd, const char* data, std::size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, "cannot write", errno);
    }
    if (n == 0) fail(path, "cannot write", EIO);
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void fsync_fd(int fd, const std::string& path) {
  while (::fsync(fd) != 0) {
    if (errno != EINTR) fail(path, "cannot fsync", errno);
  }
}

}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RuntimeFailure(path + ": cannot open: " + std::strerror(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string temporary_path(const std::string& path) {
  return path + ".tmp";
}

std::string parent_directory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open to fsync", errno);
  try {
    fsync_fd(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail(path, "cannot close", errno);
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, "cannot open folder to fsync", errno);
  // Some file systems cannot fsync a folder (EINVAL); their renames are as durable as they get.
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0 && error != EINVAL) fail(dir, "cannot fsync folder", error);
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail(path, "cannot delete", errno);
}

void discard_file(const std::string& path) noexcept {
  ::unlink(path.c_str());
}

void publish_file(const std::string& tmp, const std::string& path) {
  try {
    sync_file(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "cannot rename " + tmp + " to it", errno);
  } catch (...) {
    discard_file(tmp);
    throw;
  }
  sync_directory(parent_directory(path));
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, std::vector<std::string_view>{text});
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = temporary_path(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, "cannot create", errno);
  try {
    for (const auto piece : pieces) write_all(fd, piece.data(), piece.size(), tmp);
    fsync_fd(fd, tmp);
  } catch (...) {
    ::close(fd);
    discard_file(tmp);
    throw;
  }
  if (::close(fd) != 0) {
    const int error = errno;
    discard_file(tmp);
    fail(tmp, "cannot close", error);
  }
  publish_file(tmp, path);
}

void write_pieces(const std::string& path, const std::vector<FilePiece>& pieces, std::int64_t size) {
  const int flags = O_WRONLY | O_CLOEXEC | (size >= 0 ? O_CREAT | O_TRUNC : 0);
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) fail(path, size >= 0 ? "cannot create" : "cannot open to write", errno);
  try {
    if (size >= 0 && ::ftruncate(fd, static_cast<off_t>(size)) != 0) fail(path, "cannot set the length", errno);
    for (const auto& piece : pieces) {
      const char* data = piece.bytes.data();
      std::size_t left = piece.bytes.size();
      auto at = static_cast<off_t>(piece.offset);
      while (left > 0) {
        const ssize_t n = ::pwrite(fd, data, left, at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail(path, "cannot write", n < 0 ? errno : EIO);
        data += n;
        left -= static_cast<std::size_t>(n);
        at += n;
      }
    }
    fsync_fd(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail(path, "cannot close", errno);
}

std::string read_piece(const std::string& path, std::int64_t offset, std::int64_t bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open", errno);
  std::string out(static_cast<std::size_t>(bytes), '\0');
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset) + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : EIO;
      ::close(fd);
      fail(path, n == 0 ? "shorter than expected" : "cannot read", error);
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return out;
}

void make_directories(const std::string& path) {
  std::string partial;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (mkdir(partial.c_str(), 0775) != 0 && errno != EEXIST) {
      throw RuntimeFailure(partial + ": cannot create folder: " + std::strerror(errno));
    }
  }
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw RuntimeFailure(path + ": not a folder");
}

namespace {

// The length of the file up to and including its last newline: a log continued after a
// crash drops a last line the crash cut short, instead of gluing the next line to it.
off_t whole_lines_length(int fd, off_t end, const std::string& path) {
  char block[4096];
  for (off_t stop = end; stop > 0;) {
    const off_t start = stop > static_cast<off_t>(sizeof(block)) ? stop - static_cast<off_t>(sizeof(block)) : 0;
    const ssize_t n = ::pread(fd, block, static_cast<std::size_t>(stop - start), start);
    if (n < 0) fail(path, "cannot read", errno);
    for (ssize_t i = n - 1; i >= 0; --i) {
      if (block[i] == '\n') return start + i + 1;
    }
    stop = start;
  }
  return 0;
}

}  // namespace

AppendLog::AppendLog(const std::string& path, bool append) : path_(path) {
  // Not O_APPEND: a line cut short is cut off again at the last whole line (append()).
  fd_ = ::open(path.c_str(), (append ? O_RDWR : O_WRONLY) | O_CREAT | O_CLOEXEC | (append ? 0 : O_TRUNC), 0644);
  if (fd_ < 0) fail(path, "cannot open for writing", errno);
  try {
    off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end < 0) fail(path, "cannot seek", errno);
    if (append && end > 0) {
      const off_t whole = whole_lines_length(fd_, end, path);
      if (whole != end && (::ftruncate(fd_, whole) != 0 || ::lseek(fd_, whole, SEEK_SET) < 0)) {
        fail(path, "cannot cut off a partial last line", errno);
      }
      end = whole;
    }
    size_ = static_cast<std::int64_t>(end);
    sync_directory(parent_directory(path));
  } catch (...) {
    ::close(fd_);  // no destructor runs for a constructor that throws
    throw;
  }
}

AppendLog::AppendLog(AppendLog&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)), size_(o.size_) {
  o.fd_ = -1;
}

AppendLog& AppendLog::operator=(AppendLog&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    size_ = o.size_;
    o.fd_ = -1;
  }
  return *this;
}

AppendLog::~AppendLog() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendLog::append(const std::string& text) {
  if (fd_ < 0) return;
  try {
    write_all(fd_, text.data(), text.size(), path_);
  } catch (...) {
    // Keep only whole lines: cut off what part of this one reached the file.
    if (::ftruncate(fd_, size_) == 0) ::lseek(fd_, size_, SEEK_SET);
    throw;
  }
  size_ += static_cast<std::int64_t>(text.size());
}

void AppendLog::sync() {
  if (fd_ >= 0) fsync_fd(fd_, path_);
}

void AppendLog::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  try {
    fsync_fd(fd, path_);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail(path_, "cannot close", errno);
}

}  // namespace hpctrain
