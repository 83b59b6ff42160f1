// The run driver (run/RunDriver): the banner from a fixed context, the run directory opened
// once (config.json holds the resolved config, metrics.jsonl opened), the summary text, and
// whole runs on a tiny data set: plain training, and a cross-validation with its final retrain.
#include <ftw.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "run/RunDriver.hpp"
#include "util/Files.hpp"

using namespace hpctrain;

namespace {

// A folder under /tmp, removed with everything in it. (POSIX calls rather than
// std::filesystem: libtorch.so exports std::filesystem symbols of its own, and
// remove_all(path, error_code) resolves to one that crashes.)
struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = "/tmp/hpctrain_run_XXXXXX";
    path = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    ::nftw(
        path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return std::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

RunContext fixed_context() {
  RunContext context;
  context.config_path = "configs/x.json";
  context.threads = 4;
  context.layout.node_count = 2;
  return context;
}

// 64 training and 16 test images of 1x4x4 pixels in two classes told apart by brightness.
void write_tiny_dataset(const std::string& path) {
  H5File f = H5File::create(path);
  write_dataset_header(f, "tiny", "test_run", {"dark", "bright"});
  for (auto [split, n] : {std::pair<std::string, std::int64_t>{"train", 64}, {"test", 16}}) {
    std::vector<std::uint8_t> images(static_cast<std::size_t>(n * 16));
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      labels[i] = static_cast<std::int32_t>(i % 2);
      for (std::int64_t p = 0; p < 16; ++p) images[i * 16 + p] = static_cast<std::uint8_t>(labels[i] * 160 + p * 5);
    }
    write_split(f, split, {1, 4, 4}, images, labels);
  }
}

std::string write_config(const TempDir& dir, const std::string& data) {
  const std::string path = dir / "config.json";
  std::ofstream(path) << R"({"data": {"path": ")" << data << R"(", "val_fraction": 0.25},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"epochs": 1, "batch_size": 16, "seed": 1},
    "run": {"progress": "none"}})";
  return path;
}

}  // namespace

TEST(RunDriver, BannerFromAFixedContext) {
  EXPECT_EQ(run_banner(fixed_context(), 8, "runs/x"),
            std::string("hpctrain ") + HPCTRAIN_VERSION_STRING +
                ": 8 ranks on 2 node(s), 4 threads per rank, run directory runs/x");
}

TEST(RunDriver, OpenRunDirectoryWritesTheConfigAndPrintsTheBannerOnce) {
  TempDir dir;
  const std::string run_dir = dir / "run";
  const std::string resolved = "{\n  \"train\": {\"epochs\": 3}\n}\n";
  MetricsLog log;
  testing::internal::CaptureStdout();
  open_run_directory(run_dir, resolved, fixed_context(), Communicator::world(), &log);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(read_file(run_dir + "/config.json"), resolved);
  EXPECT_TRUE(log.enabled());
  EXPECT_TRUE(exists(run_dir + "/metrics.jsonl"));
  EXPECT_EQ(out, run_banner(fixed_context(), 1, run_dir) + "\n");

  // Without a log (a cross-validation's directory): config.json only.
  const std::string cv_dir = dir / "cv";
  testing::internal::CaptureStdout();
  open_run_directory(cv_dir, resolved, fixed_context(), Communicator::world());
  testing::internal::GetCapturedStdout();
  EXPECT_EQ(read_file(cv_dir + "/config.json"), resolved);
  EXPECT_FALSE(exists(cv_dir + "/metrics.jsonl"));
}

TEST(RunDriver, TrainingSummary) {
  TrainResult result;
  result.steps = 10;
  result.samples = 2000;
  result.has_test = true;
  result.test.loss = 0.5;
  result.test.accuracy = 0.875;
  EXPECT_EQ(training_summary(result, 4.0, true, "runs/x"),
            "\nsummary: 10 steps, 500 samples/s, train 4.0 s\n"
            "  test:       loss 0.5000 accuracy 0.8750\n"
            "report: runs/x/report.json\nmetrics: runs/x/metrics.jsonl\n");
  result.test.mse = 4.0;
  result.test.mae = 1.5;
  EXPECT_EQ(training_summary(result, 4.0, false, "r"),
            "\nsummary: 10 steps, 500 samples/s, train 4.0 s\n"
            "  test:       loss 0.5000 rmse 2.0000 mae 1.5000\n"
            "report: r/report.json\nmetrics: r/metrics.jsonl\n");
}

TEST(RunDriver, TrainingRunWritesTheResolvedConfigOnce) {
  TempDir dir;
  const std::string data = dir / "tiny.h5";
  write_tiny_dataset(data);
  {  // the data set's hashes, as `hpctrain inspect` computes them, are the stored ones
    H5File f = H5File::open_read_serial(data);
    const DatasetMeta meta = read_dataset_meta(f);
    EXPECT_EQ(dataset_sha256(f, "/train/images"), meta.train.inputs_sha256);
    EXPECT_EQ(dataset_sha256(f, "/test/labels"), meta.test.targets_sha256);
  }
  const std::string config = write_config(dir, data);
  const std::string run_dir = dir / "run";
  const std::vector<std::string> overrides{"run.dir=" + run_dir, "train.batch_size=8"};

  testing::internal::CaptureStdout();
  const int code = drive_run(config, overrides, Communicator::world());
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(code, 0);
  EXPECT_EQ(read_file(run_dir + "/config.json"),
            load_run_config(config, overrides, LaunchEnvironment::detect()).resolved_json);
  EXPECT_NE(read_file(run_dir + "/config.json").find("\"batch_size\": 8"), std::string::npos);
  EXPECT_EQ(count_of(out, "run directory " + run_dir + "\n"), 1u) << out;
  EXPECT_EQ(count_of(out, "\nsummary: "), 1u) << out;
  EXPECT_TRUE(exists(run_dir + "/report.json"));
  EXPECT_FALSE(read_file(run_dir + "/metrics.jsonl").empty());
}

TEST(RunDriver, CrossValidationOpensItsDirectoryAndTheFinalRetrainsOnce) {
  TempDir dir;
  const std::string data = dir / "tiny.h5";
  write_tiny_dataset(data);
  const std::string config = write_config(dir, data);
  const std::string run_dir = dir / "cv";
  const std::vector<std::string> overrides{"run.dir=" + run_dir, "cv.folds=2", "cv.final_retrain=true",
                                           "data.val_fraction=0"};

  testing::internal::CaptureStdout();
  EXPECT_EQ(drive_run(config, overrides, Communicator::world()), 0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(read_file(run_dir + "/config.json"),
            load_run_config(config, overrides, LaunchEnvironment::detect()).resolved_json);
  EXPECT_EQ(count_of(out, "run directory " + run_dir + "\n"), 1u) << out;
  EXPECT_EQ(count_of(out, "run directory " + run_dir + "/final\n"), 1u) << out;
  EXPECT_TRUE(exists(run_dir + "/final/config.json"));
  EXPECT_TRUE(exists(run_dir + "/final/report.json"));
}
