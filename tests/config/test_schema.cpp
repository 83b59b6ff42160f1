#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "config/MetricCatalog.hpp"
#include "config/Schema.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

namespace {

const std::string kMinimal = R"({"data": {"path": "x.h5"}})";

std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, "test.json", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ConfigSchema, DefaultsFillEveryKey) {
  const auto r = parse_config(kMinimal, "test.json", {});
  EXPECT_EQ(r.config.data.path, "x.h5");
  EXPECT_EQ(r.config.model.name, "cnn");
  EXPECT_EQ(r.config.train.batch_size, 128);
  EXPECT_DOUBLE_EQ(r.config.comm.bucket_mb, 25.0);
  EXPECT_EQ(r.config.model.channels, (std::vector<std::int64_t>{32, 64}));
  // The resolved config names every key in the schema.
  for (const auto& k : config_schema()) {
    const auto leaf = k.path.substr(k.path.rfind('.') + 1);
    EXPECT_NE(r.resolved_json.find("\"" + leaf + "\""), std::string::npos) << k.path;
  }
}

TEST(ConfigSchema, ResolvedConfigParsesBackToTheSameValues) {
  const auto a = parse_config(R"({"data": {"path": "x.h5"}, "train": {"epochs": 7}})", "a.json", {"optimizer.lr=0.05"});
  const auto b = parse_config(a.resolved_json, "resolved.json", {});
  EXPECT_EQ(a.resolved_json, b.resolved_json);
  EXPECT_EQ(b.config.train.epochs, 7);
  EXPECT_DOUBLE_EQ(b.config.optimizer.lr, 0.05);
}

TEST(ConfigSchema, UnknownKeyNamesFullPath) {
  const auto e = error_of(R"({"data": {"path": "x.h5"}, "train": {"epohcs": 3}})");
  EXPECT_NE(e.find("test.json"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key \"train.epohcs\""), std::string::npos) << e;
  EXPECT_NE(e.find("epochs"), std::string::npos) << e;  // lists the known keys
  EXPECT_NE(error_of(R"({"data": {"path": "x.h5"}, "trainer": {}})").find("unknown key \"trainer\""),
            std::string::npos);
}

TEST(ConfigSchema, WrongTypeNamesExpectationAndFinding) {
  const auto e = error_of(R"({"data": {"path": "x.h5"}, "optimizer": {"lr": "fast"}})");
  EXPECT_NE(e.find("optimizer.lr: expected number"), std::string::npos) << e;
  EXPECT_NE(e.find("found string \"fast\""), std::string::npos) << e;
  const auto f = error_of(R"({"data": {"path": "x.h5"}, "train": {"epochs": 2.5}})");
  EXPECT_NE(f.find("train.epochs: expected integer"), std::string::npos) << f;
  const auto g = error_of(R"({"data": {"path": "x.h5"}, "model": {"channels": [32, "x"]}})");
  EXPECT_NE(g.find("model.channels"), std::string::npos) << g;
  const auto h = error_of(R"({"data": "x.h5"})");
  EXPECT_NE(h.find("data: expected an object"), std::string::npos) << h;
}

TEST(ConfigSchema, OutOfRangeAndChoices) {
  const auto e = error_of(R"({"data": {"path": "x.h5", "val_fraction": 0.9}})");
  EXPECT_NE(e.find("data.val_fraction: expected number in [0, 0.5], found number 0.9"), std::string::npos) << e;
  const auto f = error_of(R"({"data": {"path": "x.h5"}, "optimizer": {"name": "lamb"}})");
  EXPECT_NE(f.find("optimizer.name: expected one of \"sgd\", \"adam\", \"adamw\""), std::string::npos) << f;
  EXPECT_NE(error_of(R"({"data": {"path": "x.h5"}, "train": {"batch_size": 0}})").find("train.batch_size"),
            std::string::npos);
}

TEST(ConfigSchema, OverridesPassTheSameChecks) {
  const auto r = parse_config(kMinimal, "test.json",
                              {"train.epochs=5", "run.dir=runs/x", "model.channels=[8,16,32]", "data.normalize=false"});
  EXPECT_EQ(r.config.train.epochs, 5);
  EXPECT_EQ(r.config.run.dir, "runs/x");
  EXPECT_EQ(r.config.model.channels, (std::vector<std::int64_t>{8, 16, 32}));
  EXPECT_FALSE(r.config.data.normalize);
  const auto e = error_of(kMinimal, {"train.epochs=-1"});
  EXPECT_NE(e.find("override \"train.epochs=-1\": train.epochs: expected integer in [1, 100000]"), std::string::npos)
      << e;
  EXPECT_NE(error_of(kMinimal, {"train.nope=1"}).find("unknown key \"train.nope\""), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"train.epochs"}).find("expected key.path=value"), std::string::npos);
}

TEST(ConfigSchema, InvalidJsonNamesLineAndColumn) {
  const auto e = error_of("{\n  \"data\": {\"path\": \"x.h5\",}\n}");
  EXPECT_NE(e.find("test.json:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;
  EXPECT_NE(error_of("[1, 2]").find("expected a JSON object at the top level"), std::string::npos);
}

TEST(ConfigSchema, RequiredDataPath) {
  EXPECT_NE(error_of("{}").find("missing required key \"data.path\""), std::string::npos);
  EXPECT_THROW(load_config("/nonexistent/config.json", {}), ConfigError);
}

TEST(ConfigSchema, EveryKeyHasDocTypeAndValidDefault) {
  std::set<std::string> paths;
  for (const auto& k : config_schema()) {
    EXPECT_TRUE(paths.insert(k.path).second) << "duplicate " << k.path;
    EXPECT_FALSE(k.doc.empty()) << k.path;
    EXPECT_NE(k.path.find('.'), std::string::npos) << k.path;
  }
  const std::string md = config_reference_markdown();
  for (const auto& p : paths) EXPECT_NE(md.find("`" + p + "`"), std::string::npos) << p;
}

TEST(ConfigSchema, CheckedInReferenceIsUpToDate) {
  std::ifstream in(std::string(HPCTRAIN_SOURCE_DIR) + "/docs/config.md");
  ASSERT_TRUE(in) << "docs/config.md missing";
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), config_reference_markdown()) << "regenerate: build/hpctrain config --docs > docs/config.md";
}

TEST(ConfigSchema, ShippedConfigsAreValid) {
  for (const char* name : {"fashion_mnist_cnn.json", "fashion_mnist_mlp.json", "fashion_mnist_fast.json"}) {
    EXPECT_NO_THROW(load_config(std::string(HPCTRAIN_SOURCE_DIR) + "/configs/" + name, {})) << name;
  }
}

TEST(ConfigSchema, TargetsAndBestMetricsParse) {
  const MetricTarget t = parse_metric_target(" val_accuracy >= 0.93", "train.target");
  EXPECT_EQ(t.metric.split, "val");
  EXPECT_EQ(t.metric.name, "accuracy");
  EXPECT_EQ(t.op, ">=");
  EXPECT_DOUBLE_EQ(t.value, 0.93);
  EXPECT_TRUE(t.reached(0.93));
  EXPECT_FALSE(t.reached(0.9299));
  EXPECT_EQ(t.describe(), "val_accuracy>=0.93");
  const MetricTarget below = parse_metric_target("test_rmse<40", "train.target");
  EXPECT_EQ(below.metric.key(), "test_rmse");
  EXPECT_TRUE(below.reached(39.9));
  EXPECT_FALSE(below.reached(40));
  EXPECT_TRUE(parse_metric_target("val_r2>0.5", "t").reached(0.6));
  EXPECT_TRUE(parse_metric_target("val_loss<=0.3", "t").reached(0.3));
  EXPECT_EQ(parse_split_metric("val_f1_macro", "checkpoint.keep_best").name, "f1_macro");
  for (const char* bad : {"val_accuracy=0.9", ">=0.9", "val_accuracy>=", "val_accuracy>=abc", "val_nope>=1",
                          "accuracy>=0.9", "val_accuracy>=0.9x"}) {
    EXPECT_THROW(parse_metric_target(bad, "train.target"), ConfigError) << bad;
  }
  EXPECT_NE(error_of(kMinimal, {"train.target=val_accuracy=0.9"}).find("train.target"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"checkpoint.keep_best=val_nothing"}).find("unknown metric"), std::string::npos);
  const auto r =
      parse_config(kMinimal, "test.json", {"train.target=val_accuracy>=0.5", "checkpoint.keep_best=val_loss"});
  EXPECT_EQ(r.config.train.target, "val_accuracy>=0.5");
  EXPECT_EQ(r.config.checkpoint.keep_best, "val_loss");
}
