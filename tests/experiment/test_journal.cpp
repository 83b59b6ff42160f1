// The task journal: what a resumed experiment still has to run (finished tasks are found,
// unfinished, preempted and cut-short ones are not), records kept byte for byte, and the
// config a record belongs to.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "config/Resume.hpp"
#include "experiment/Journal.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"

using namespace hpctrain;
namespace fs = std::filesystem;

namespace {

const std::string kConfig =
    R"({"data":{"path":"d.h5"},"train":{"epochs":2},"run":{"dir":"a"},"checkpoint":{"resume":"auto"}})";

// Not std::filesystem::remove_all, which binds to libtorch's crashing copy (Journal.cpp).
void remove_tree(const fs::path& path) {
  if (fs::is_directory(path)) {
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(path)) entries.push_back(entry.path());
    for (const auto& entry : entries) remove_tree(entry);
  }
  std::remove(path.c_str());
}

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("hpctrain_journal_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    remove_tree(root_);
    make_directories(root_.string());
    dir_ = (root_ / "tasks").string();
  }
  void TearDown() override { remove_tree(root_); }

  static TaskOutcome outcome(int trial, int fold, TaskStatus status) {
    TaskOutcome o;
    o.trial = trial;
    o.fold = fold;
    o.epochs = 2;
    o.status = status;
    if (status == TaskStatus::Ok) {
      o.metrics = boost::json::object{{"count", 10}, {"accuracy", 0.5}};
      o.stop_reason = "completed";
    } else {
      o.error = status == TaskStatus::Failed ? "boom" : "preempted by SIGTERM";
    }
    return o;
  }
  // Records the outcome as the experiment does: the text as it arrived, and its status.
  static void record(TaskJournal& journal, const TaskOutcome& o) {
    journal.record(TaskJournal::key(0, o.trial, 0, o.fold), o, to_json_text(o));
  }

  fs::path root_;
  std::string dir_;
};

// The tasks of a round that the journal does not hold as finished: what a resume runs.
std::vector<std::string> remaining(const TaskJournal& journal, const std::vector<std::string>& keys) {
  std::vector<std::string> out;
  for (const auto& k : keys) {
    if (!journal.find(k)) out.push_back(k);
  }
  return out;
}

}  // namespace

TEST(TaskJournal, KeysNameRungTrialAndSplit) {
  EXPECT_EQ(TaskJournal::key(1, 3, 0, 2), "rung1_trial3_repeat0_fold2");
  EXPECT_EQ(TaskJournal::key(0, 0, 0, -1), "rung0_trial0_holdout");
}

TEST_F(JournalTest, ResumeRunsOnlyTheUnfinishedTasks) {
  {
    TaskJournal journal(dir_);
    EXPECT_EQ(journal.open("auto", kConfig), 0u);  // nothing recorded yet: a fresh record
    record(journal, outcome(0, 0, TaskStatus::Ok));
    record(journal, outcome(0, 1, TaskStatus::Failed));
    record(journal, outcome(0, 2, TaskStatus::Preempted));  // not a result: not written
  }
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "rung0_trial0_repeat0_fold2.json"));
  TaskJournal resumed(dir_);
  EXPECT_EQ(resumed.open("auto", kConfig), 2u);
  const std::vector<std::string> keys = {TaskJournal::key(0, 0, 0, 0), TaskJournal::key(0, 0, 0, 1),
                                         TaskJournal::key(0, 0, 0, 2), TaskJournal::key(0, 0, 0, 3)};
  EXPECT_EQ(remaining(resumed, keys), (std::vector<std::string>{keys[2], keys[3]}));
  ASSERT_NE(resumed.find(keys[1]), nullptr);
  EXPECT_EQ(resumed.find(keys[1])->status, TaskStatus::Failed);
  EXPECT_EQ(resumed.find(keys[1])->error, "boom");
  EXPECT_EQ(resumed.find(keys[0])->metric("accuracy"), 0.5);
}

TEST_F(JournalTest, RecordsTheOutcomeTextAsItArrived) {
  TaskJournal journal(dir_);
  journal.open("none", kConfig);
  // "-0" reads back as the integer 0: the record keeps the leader's bytes, not a re-print.
  const std::string text =
      R"({"trial":0,"repeat":0,"fold":-1,"epochs":2,"group":0,"ranks":1,"train_samples":8,"held_out_samples":2,)"
      R"("status":"failed","error":"x","wall_seconds":-0})";
  journal.record(TaskJournal::key(0, 0, 0, -1), parse_task_outcome(text), text);
  EXPECT_EQ(read_file(dir_ + "/rung0_trial0_holdout.json"), text);
}

TEST_F(JournalTest, ACutShortOrUnfinishedRecordRunsAgain) {
  {
    TaskJournal journal(dir_);
    journal.open("none", kConfig);
    record(journal, outcome(0, 0, TaskStatus::Ok));
    record(journal, outcome(0, 1, TaskStatus::Ok));
  }
  // A crash while writing left a torn file; a preempted outcome written by an older
  // version; a file that is not a task at all.
  const std::string full = read_file(dir_ + "/rung0_trial0_repeat0_fold1.json");
  write_file_atomic(dir_ + "/rung0_trial0_repeat0_fold1.json", full.substr(0, full.size() / 2));
  TaskOutcome preempted = outcome(0, 2, TaskStatus::Preempted);
  write_file_atomic(dir_ + "/rung0_trial0_repeat0_fold2.json", to_json_text(preempted));
  write_file_atomic(dir_ + "/notes.txt", "not a record");
  TaskJournal resumed(dir_);
  EXPECT_EQ(resumed.open("auto", kConfig), 1u);
  EXPECT_NE(resumed.find(TaskJournal::key(0, 0, 0, 0)), nullptr);
  EXPECT_EQ(resumed.find(TaskJournal::key(0, 0, 0, 1)), nullptr);
  EXPECT_EQ(resumed.find(TaskJournal::key(0, 0, 0, 2)), nullptr);
}

TEST_F(JournalTest, AnotherConfigIsRefusedButWhereItRunsMayChange) {
  {
    TaskJournal journal(dir_);
    journal.open("none", kConfig);
    record(journal, outcome(0, 0, TaskStatus::Ok));
  }
  // run, checkpoint, device, comm and precision may differ on a requeue.
  const std::string moved = R"({"data":{"path":"d.h5"},"train":{"epochs":2},"run":{"dir":"b"},"device":{"type":"cpu"},)"
                            R"("checkpoint":{"resume":"none"},"comm":{"backend":"mpi"},"precision":{"mode":"fp32"}})";
  TaskJournal same(dir_);
  EXPECT_EQ(same.open("auto", moved), 1u);
  TaskJournal other(dir_);
  try {
    other.open("auto", R"({"data":{"path":"d.h5"},"train":{"epochs":3},"run":{"dir":"a"}})");
    FAIL() << "a record of another config was reused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("holds the finished tasks of a different config"), std::string::npos);
  }
}

TEST_F(JournalTest, NoneStartsOverAndOtherModesAreRefused) {
  {
    TaskJournal journal(dir_);
    journal.open("none", kConfig);
    record(journal, outcome(0, 0, TaskStatus::Ok));
  }
  TaskJournal fresh(dir_);
  EXPECT_EQ(fresh.open("none", kConfig), 0u);
  EXPECT_EQ(fresh.find(TaskJournal::key(0, 0, 0, 0)), nullptr);
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "rung0_trial0_repeat0_fold0.json"));
  EXPECT_TRUE(fs::exists(fs::path(dir_) / "config.json"));
  TaskJournal latest(dir_);
  EXPECT_THROW(latest.open("latest", kConfig), ConfigError);
}

TEST(ResumeIdentity, AJournalOfAnotherDeviceOrPrecisionIsReused) {
  // The rule is each key's on-resume rule in the schema (config/Resume.hpp): free keys
  // (device, precision, comm, run, checkpoint) may change between a job and its requeue.
  const std::string a = R"({"run":{"dir":"a"},"data":{"path":"d"},"precision":{"mode":"bf16"}})";
  const std::string b = R"({"run":{"dir":"b"},"data":{"path":"d"},"precision":{"mode":"fp32"}})";
  EXPECT_EQ(task_identity(a), "{\n  \"data\": {\n    \"path\": \"d\"\n  }\n}\n");
  EXPECT_EQ(task_identity(a), task_identity(b));
  EXPECT_NE(task_identity(a), task_identity(R"({"data":{"path":"e"}})"));
}
