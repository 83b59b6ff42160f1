// Checkpoint files on disk: pruning reads the new checkpoint back before it deletes older
// ones, never deletes a good checkpoint in favour of newer corrupt ones, and a failed write
// leaves the previous checkpoints as they were. One rank, a tiny model.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/Checkpoint.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"

using namespace hpctrain;

namespace {

std::string temp_dir() {
  char pattern[] = "/tmp/hpctrain_ckfiles_XXXXXX";
  const char* dir = mkdtemp(pattern);
  if (dir == nullptr) throw std::runtime_error("mkdtemp failed");
  return dir;
}

struct Fixture {
  Communicator comm = Communicator::world();
  torch::nn::Linear model{4, 3};
  torch::optim::SGD optimizer{model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9)};
  std::string dir = temp_dir();

  std::string write(std::int64_t step) {
    LoopPosition position;
    position.step = step;
    RankState mine;
    mine.rng = at::detail::getDefaultCPUGenerator().get_state();
    const std::string path = dir + "/" + checkpoint_file_name(step);
    save_checkpoint(path, "{}", "{}", position, *model, &optimizer, mine, comm, CheckpointLayout::data_parallel(comm));
    return path;
  }
};

// Flips one bit of one weight in place, as a failing disk or memory would: the file still
// opens, its checksum no longer matches.
void corrupt(const std::string& path) {
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  H5Id ds(H5Dopen2(file, "/model/parameters/00000", H5P_DEFAULT));
  std::vector<float> w(12);  // Linear(4, 3).weight
  ASSERT_GE(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data()), 0);
  std::uint32_t bits = 0;
  std::memcpy(&bits, w.data(), 4);
  bits ^= 1u << 12;
  std::memcpy(w.data(), &bits, 4);
  ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data()), 0);
}

std::vector<std::string> names(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(p.substr(p.find_last_of('/') + 1));
  return out;
}

}  // namespace

TEST(CheckpointFiles, PruneKeepsTheNewestAfterVerifyingIt) {
  Fixture f;
  for (std::int64_t step : {10, 20, 30}) {
    const std::string path = f.write(step);
    prune_checkpoints(f.dir, 2, path);
  }
  EXPECT_EQ(names(list_checkpoints(f.dir)),
            (std::vector<std::string>{checkpoint_file_name(30), checkpoint_file_name(20)}));
}

TEST(CheckpointFiles, ANewCheckpointThatDoesNotVerifyPrunesNothing) {
  Fixture f;
  f.write(10);
  f.write(20);
  const std::string bad = f.write(30);
  corrupt(bad);
  try {
    prune_checkpoints(f.dir, 1, bad);
    FAIL() << "a corrupt new checkpoint was accepted";
  } catch (const RuntimeFailure& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(bad), std::string::npos) << message;
    EXPECT_NE(message.find("older checkpoints in " + f.dir + " are kept"), std::string::npos) << message;
  }
  EXPECT_EQ(list_checkpoints(f.dir).size(), 3u);
  EXPECT_NO_THROW(verify_checkpoint(f.dir + "/" + checkpoint_file_name(20)));
}

TEST(CheckpointFiles, NewerCorruptCheckpointsNeverPushOutAGoodOne) {
  // A run resumed from step 20 because step 40 was corrupt, now writing step 30 with keep=1:
  // step 40 is not counted, so step 30 stays (and step 20 goes).
  Fixture f;
  f.write(20);
  corrupt(f.write(40));
  const std::string fresh = f.write(30);
  prune_checkpoints(f.dir, 1, fresh);
  EXPECT_EQ(names(list_checkpoints(f.dir)),
            (std::vector<std::string>{checkpoint_file_name(40), checkpoint_file_name(30)}));
}

TEST(CheckpointFiles, AFailedWriteLeavesThePreviousCheckpointAndNoTemporaryFile) {
  Fixture f;
  const std::string good = f.write(10);
  const std::string before = read_file(good);
  // The kernel refuses writes past 4 KB (EFBIG), as a full disk refuses them (ENOSPC).
  rlimit saved{};
  getrlimit(RLIMIT_FSIZE, &saved);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small{4096, saved.rlim_max};
  setrlimit(RLIMIT_FSIZE, &small);
  std::string message;
  try {
    f.write(20);
  } catch (const Error& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  const std::string tmp = temporary_path(f.dir + "/" + checkpoint_file_name(20));
  EXPECT_NE(message.find(tmp), std::string::npos) << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  struct stat st {};
  EXPECT_NE(stat(tmp.c_str(), &st), 0) << "temporary file left behind";
  EXPECT_EQ(names(list_checkpoints(f.dir)), std::vector<std::string>{checkpoint_file_name(10)});
  EXPECT_EQ(read_file(good), before);
}
