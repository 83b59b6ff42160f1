// Task outcomes: the JSON layout the journal, the reports and search-merge read (keys and
// their order, byte for byte), the round trip through text, and what is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "experiment/TaskOutcome.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

using namespace hpctrain;
namespace json = boost::json;

namespace {

TaskOutcome ok_outcome() {
  TaskOutcome o;
  o.trial = 3;
  o.repeat = 1;
  o.fold = 2;
  o.epochs = 4;
  o.group = 1;
  o.ranks = 2;
  o.train_samples = 80;
  o.held_out_samples = 2;
  o.status = TaskStatus::Ok;
  o.confusion = std::vector<std::vector<std::int64_t>>{{1, 0}, {0, 1}};
  o.metrics = json::object{{"count", 2}, {"accuracy", 1.0}, {"f1_macro", nullptr}, {"loss", 0.25}};
  o.train_seconds = 1.5;
  o.samples_per_s = 320.0;
  o.parameters = 1234;
  o.steps = 10;
  o.stop_reason = "completed";
  o.epoch_records = json::array{json::object{{"epoch", 1}, {"train_loss", 0.5}}};
  o.predictions = HeldOutPredictions{{4, 9}, {0, 1}, {0.25, 0.125}, {0.75, 0.25, 0.125, 0.875}};
  o.wall_seconds = 2.0;
  return o;
}

}  // namespace

TEST(TaskOutcome, OkLayoutIsTheFoldRunnersOrder) {
  EXPECT_EQ(to_json_text(ok_outcome()),
            R"({"trial":3,"repeat":1,"fold":2,"epochs":4,"group":1,"ranks":2,"train_samples":80,)"
            R"("held_out_samples":2,"status":"ok","confusion":[[1,0],[0,1]],)"
            R"("metrics":{"count":2,"accuracy":1,"f1_macro":null,"loss":0.25},"train_seconds":1.5,)"
            R"("samples_per_s":320,"parameters":1234,"steps":10,"stop_reason":"completed",)"
            R"("epoch_records":[{"epoch":1,"train_loss":0.5}],)"
            R"("predictions":{"index":[4,9],"target":[0,1],"loss":[0.25,0.125],"outputs":[0.75,0.25,0.125,0.875]},)"
            R"("wall_seconds":2})");
}

TEST(TaskOutcome, FailedAndRungLayout) {
  TaskOutcome o;
  o.trial = 2;
  o.fold = 1;
  o.epochs = 3;
  o.group = 1;
  o.ranks = 2;
  o.train_samples = 80;
  o.held_out_samples = 20;
  o.status = TaskStatus::Failed;
  o.error = "training diverged: the loss is NaN at step 7";
  o.wall_seconds = 0.5;
  o.rung = 1;
  EXPECT_EQ(to_json_text(o),
            R"({"trial":2,"repeat":0,"fold":1,"epochs":3,"group":1,"ranks":2,"train_samples":80,)"
            R"("held_out_samples":20,"status":"failed","error":"training diverged: the loss is NaN at step 7",)"
            R"("wall_seconds":0.5,"rung":1})");
}

TEST(TaskOutcome, PlaceholderOfAMissingShardHasItsOwnLayout) {
  TaskOutcome o;
  o.ran = false;
  o.trial = 1;
  o.rung = 0;
  o.epochs = 2;
  o.error = "shard 1 of 2 left no search_report.json";
  const std::string text = to_json_text(o);
  EXPECT_EQ(text, R"({"trial":1,"repeat":0,"fold":-1,"rung":0,"epochs":2,"status":"failed",)"
                  R"("error":"shard 1 of 2 left no search_report.json"})");
  const TaskOutcome back = parse_task_outcome(text);
  EXPECT_FALSE(back.ran);
  EXPECT_EQ(to_json_text(back), text);
}

TEST(TaskOutcome, RoundTripThroughText) {
  TaskOutcome o = ok_outcome();
  o.rung = 2;
  const std::string text = to_json_text(o);
  const TaskOutcome back = parse_task_outcome(text);
  EXPECT_EQ(to_json_text(back), text);
  EXPECT_EQ(back.status, TaskStatus::Ok);
  EXPECT_EQ(back.trial, 3);
  EXPECT_EQ(back.repeat, 1);
  EXPECT_EQ(back.fold, 2);
  EXPECT_EQ(back.epochs, 4);
  EXPECT_EQ(back.group, 1);
  EXPECT_EQ(back.ranks, 2);
  EXPECT_EQ(back.train_samples, 80);
  EXPECT_EQ(back.held_out_samples, 2);
  ASSERT_TRUE(back.confusion.has_value());
  EXPECT_EQ(*back.confusion, (std::vector<std::vector<std::int64_t>>{{1, 0}, {0, 1}}));
  // Integral doubles come back as integers in JSON and as the same doubles here.
  EXPECT_EQ(back.samples_per_s, 320.0);
  EXPECT_EQ(back.wall_seconds, 2.0);
  EXPECT_EQ(back.metric("accuracy"), 1.0);
  EXPECT_TRUE(std::isnan(back.metric("f1_macro")));  // null
  EXPECT_TRUE(std::isnan(back.metric("rmse")));      // absent
  EXPECT_EQ(back.parameters, 1234);
  EXPECT_EQ(back.steps, 10);
  EXPECT_EQ(back.stop_reason, "completed");
  ASSERT_TRUE(back.predictions.has_value());
  EXPECT_EQ(back.predictions->index, (std::vector<std::int64_t>{4, 9}));
  EXPECT_EQ(back.predictions->outputs, (std::vector<double>{0.75, 0.25, 0.125, 0.875}));
  ASSERT_TRUE(back.rung.has_value());
  EXPECT_EQ(*back.rung, 2);
}

TEST(TaskOutcome, ShortestRoundTripDoublesSurviveTwice) {
  TaskOutcome o = ok_outcome();
  o.train_seconds = 0.1 + 0.2;  // 0.30000000000000004
  o.samples_per_s = 1e20;
  o.predictions->loss = {1.0 / 3.0, -0.0};
  const std::string once = to_json_text(parse_task_outcome(to_json_text(o)));
  EXPECT_EQ(to_json_text(parse_task_outcome(once)), once);
  EXPECT_EQ(parse_task_outcome(once).train_seconds, 0.1 + 0.2);
  EXPECT_EQ(parse_task_outcome(once).predictions->loss[0], 1.0 / 3.0);
}

TEST(TaskOutcome, StatusIsTypedAtTheBoundary) {
  EXPECT_EQ(parse_task_status("ok"), TaskStatus::Ok);
  EXPECT_EQ(parse_task_status("failed"), TaskStatus::Failed);
  EXPECT_EQ(parse_task_status("preempted"), TaskStatus::Preempted);
  EXPECT_THROW(parse_task_status("OK"), DataError);
  EXPECT_STREQ(to_string(TaskStatus::Preempted), "preempted");
}

TEST(TaskOutcome, RefusesWhatIsNotAnOutcome) {
  EXPECT_THROW(parse_task_outcome(R"({"trial":0,"repeat":0,"fo)"), DataError);  // cut short
  EXPECT_THROW(parse_task_outcome("[1, 2]"), DataError);
  try {
    parse_task_outcome(R"({"trial":0,"repeat":0,"fold":0,"epochs":1,"status":"ok","group":0,"ranks":1,)"
                       R"("train_samples":1,"held_out_samples":1,"wall_seconds":0})");
    FAIL() << "an ok outcome without metrics was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("\"metrics\""), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_task_outcome(R"({"trial":"0","repeat":0,"fold":0,"epochs":1,"status":"failed","error":""})"),
               DataError);
}

TEST(TaskOutcome, SplitNames) {
  EXPECT_EQ(split_name(0, -1), "holdout");
  EXPECT_EQ(split_name(2, 3), "repeat2_fold3");
}

TEST(TaskOutcome, DroppedPredictionsLeaveTheRungInTheirPlace) {
  TaskOutcome o = ok_outcome();
  o.predictions.reset();
  o.predictions_dropped = true;
  o.rung = 1;
  const std::string text = to_json_text(o);
  EXPECT_NE(text.find(R"("epoch_records":[{"epoch":1,"train_loss":0.5}],"rung":1,"wall_seconds":2})"),
            std::string::npos)
      << text;
  const TaskOutcome back = parse_task_outcome(text);
  EXPECT_TRUE(back.predictions_dropped);
  EXPECT_EQ(to_json_text(back), text);
  // Without predictions to drop (cv.save_predictions=false), the rung comes last.
  o.predictions_dropped = false;
  const std::string kept = to_json_text(o);
  EXPECT_NE(kept.find(R"("wall_seconds":2,"rung":1})"), std::string::npos) << kept;
  EXPECT_FALSE(parse_task_outcome(kept).predictions_dropped);
}
