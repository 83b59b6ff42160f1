// Durable writes (util/Files): the published file is whole or absent, failures name the
// path and the OS error. The faults are real: RLIMIT_FSIZE makes the kernel refuse writes
// past a size (EFBIG) as a full disk would, without root or a special file system.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <functional>
#include <string>

#include "util/Error.hpp"
#include "util/Files.hpp"

using namespace hpctrain;

namespace {

std::string temp_dir() {
  char pattern[] = "/tmp/hpctrain_files_XXXXXX";
  const char* dir = mkdtemp(pattern);
  if (dir == nullptr) throw std::runtime_error("mkdtemp failed");
  return dir;
}

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// Limits the size of files this process writes to `bytes` while alive; SIGXFSZ is ignored
// so a write past the limit fails with EFBIG instead of killing the test.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{bytes, saved_.rlim_max};
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

std::string failure_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const RuntimeFailure& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Files, AtomicWriteReplacesAndLeavesNoTemporary) {
  const std::string dir = temp_dir(), path = dir + "/a.json";
  write_file_atomic(path, "old");
  write_file_atomic(path, std::vector<std::string_view>{"n", "ew"});
  EXPECT_EQ(read_file(path), "new");
  EXPECT_FALSE(exists(temporary_path(path)));
}

TEST(Files, FailedWriteKeepsThePreviousFileAndNamesPathAndError) {
  const std::string dir = temp_dir(), path = dir + "/report.json";
  write_file_atomic(path, "good");
  std::string message;
  {
    FileSizeLimit limit(1000);
    message = failure_of([&] { write_file_atomic(path, std::string(5000, 'x')); });
  }
  EXPECT_NE(message.find(temporary_path(path)), std::string::npos) << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  EXPECT_EQ(read_file(path), "good");
  EXPECT_FALSE(exists(temporary_path(path)));
}

TEST(Files, UnwritableFolderIsOneErrorNamingThePath) {
  const std::string message = failure_of([] { write_file_atomic("/nonexistent/dir/x.json", "x"); });
  EXPECT_NE(message.find("/nonexistent/dir/x.json.tmp: cannot create: No such file or directory"), std::string::npos)
      << message;
  EXPECT_NE(failure_of([] { sync_file("/nonexistent/x"); }).find("/nonexistent/x: cannot open to fsync"),
            std::string::npos);
}

TEST(Files, RemoveFileIsChecked) {
  const std::string dir = temp_dir(), path = dir + "/x";
  write_file_atomic(path, "x");
  remove_file(path);
  EXPECT_FALSE(exists(path));
  remove_file(path);  // already gone: not an error
  // A folder cannot be unlinked: the error names it.
  EXPECT_NE(failure_of([&] { remove_file(dir); }).find(dir + ": cannot delete"), std::string::npos);
}

TEST(Files, AppendLogKeepsWholeLinesWhenTheDiskFills) {
  const std::string dir = temp_dir(), path = dir + "/metrics.jsonl";
  std::string message;
  {
    AppendLog log(path, false);
    log.append("{\"a\":1}\n");
    log.sync();
    FileSizeLimit limit(12);
    message = failure_of([&] { log.append("{\"b\":2222}\n"); });
  }
  EXPECT_NE(message.find(path + ": cannot write: File too large"), std::string::npos) << message;
  EXPECT_EQ(read_file(path), "{\"a\":1}\n");  // the line cut short was cut off
  AppendLog resumed(path, true);
  resumed.append("{\"c\":3}\n");
  resumed.close();
  EXPECT_EQ(read_file(path), "{\"a\":1}\n{\"c\":3}\n");
}

TEST(Files, AppendLogContinuedAfterACrashDropsTheLineCutShort) {
  const std::string dir = temp_dir(), path = dir + "/metrics.jsonl";
  write_file_atomic(path, "{\"a\":1}\n{\"b\":");  // killed in the middle of a line
  AppendLog log(path, true);
  log.append("{\"c\":3}\n");
  log.close();
  EXPECT_EQ(read_file(path), "{\"a\":1}\n{\"c\":3}\n");
  write_file_atomic(path, "no newline at all");
  AppendLog again(path, true);
  again.close();
  EXPECT_EQ(read_file(path), "");
}

TEST(Files, ParentDirectory) {
  EXPECT_EQ(parent_directory("a/b/c.h5"), "a/b");
  EXPECT_EQ(parent_directory("c.h5"), ".");
  EXPECT_EQ(parent_directory("/c.h5"), "/");
}
