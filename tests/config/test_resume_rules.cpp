// The schema's per-key knowledge and what reads it: resume rules (config/Resume.hpp), the
// defaults of the Config structs against the schema's, and the metric catalog's names in the
// schema's choices.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

#include "config/MetricCatalog.hpp"
#include "config/Resume.hpp"
#include "config/Schema.hpp"

using namespace hpctrain;

namespace {

const std::string kMinimal = R"({"data": {"path": "x.h5"}})";

// `resolved` with the value of one key replaced by `value` (JSON text).
std::string with_value(const std::string& resolved, const std::string& path, const std::string& value) {
  const auto values = flatten_config(resolved);
  std::string out = "{";
  std::map<std::string, std::map<std::string, std::string>> sections;
  for (const auto& [key, v] : values) {
    const auto dot = key.find('.');
    sections[key.substr(0, dot)][key.substr(dot + 1)] = key == path ? value : v;
  }
  bool first_section = true;
  for (const auto& [section, keys] : sections) {
    out += (first_section ? "\"" : ",\"") + section + "\":{";
    first_section = false;
    bool first = true;
    for (const auto& [k, v] : keys) {
      out += (first ? "\"" : ",\"") + k + "\":" + v;
      first = false;
    }
    out += "}";
  }
  return out + "}";
}

// Another valid-looking JSON value than `current`.
std::string changed(const std::string& current) {
  return current == "\"changed-value\"" ? "\"other-value\"" : "\"changed-value\"";
}

}  // namespace

TEST(ResumeRules, FixedKeysAreRefusedOthersAccepted) {
  const std::string base = parse_config(kMinimal, "test.json", {}).resolved_json;
  const auto values = flatten_config(base);
  std::map<std::string, std::string> by_key(values.begin(), values.end());
  int fixed = 0, free = 0, extends = 0;
  for (const auto& spec : config_schema()) {
    const std::string next = with_value(base, spec.path, changed(by_key.at(spec.path)));
    const auto changes = resume_config_changes(base, next);
    if (spec.on_resume == OnResume::Fixed) {
      ++fixed;
      ASSERT_EQ(changes.size(), 1u) << spec.path;
      EXPECT_EQ(changes[0].rfind(spec.path + ": ", 0), 0u) << changes[0];
    } else {
      spec.on_resume == OnResume::Free ? ++free : ++extends;
      EXPECT_TRUE(changes.empty()) << spec.path << " is documented as " << on_resume_name(spec.on_resume)
                                   << " but a resume refuses it";
    }
  }
  // The rules the docs describe: every section of where and how steps run is free, epochs extend.
  EXPECT_GT(fixed, 50);
  EXPECT_GT(free, 20);
  EXPECT_GE(extends, 2);
  for (const char* key : {"comm.bucket_mb", "comm.overlap", "device.cuda_graphs", "run.threads", "checkpoint.keep",
                          "precision.mode", "data.verify_hashes"}) {
    EXPECT_TRUE(resume_config_changes(base, with_value(base, key, "\"x\"")).empty()) << key;
  }
  for (const char* key : {"optimizer.lr", "model.name", "train.seed", "data.path", "search.space"}) {
    EXPECT_EQ(resume_config_changes(base, with_value(base, key, "\"x\"")).size(), 1u) << key;
  }
}

TEST(ResumeRules, TaskIdentityIgnoresFreeKeysOnly) {
  // Rewritten by with_value once, so every variant below lists its keys in the same order.
  const std::string base = with_value(parse_config(kMinimal, "test.json", {}).resolved_json, "", "");
  const std::string identity = task_identity(base);
  for (const auto& spec : config_schema()) {
    const std::string next = with_value(base, spec.path, "\"changed-value\"");
    if (spec.on_resume == OnResume::Free) {
      EXPECT_EQ(task_identity(next), identity) << spec.path;
    } else {
      EXPECT_NE(task_identity(next), identity) << spec.path;
    }
  }
  // Whole sections of free keys leave no empty object behind.
  EXPECT_EQ(identity.find("\"run\""), std::string::npos);
  EXPECT_EQ(identity.find("\"device\""), std::string::npos);
  EXPECT_NE(identity.find("\"optimizer\""), std::string::npos);
}

TEST(ResumeRules, KeysAnOlderConfigLacksAreListedAsAbsent) {
  const std::string base = parse_config(kMinimal, "test.json", {}).resolved_json;
  const auto changes = resume_config_changes(R"({"data": {"path": "x.h5"}})", base);
  ASSERT_FALSE(changes.empty());
  EXPECT_NE(changes[0].find("(absent)"), std::string::npos) << changes[0];
}

TEST(ConfigDefaults, StructDefaultsAgreeWithTheSchema) {
  // Config.hpp's member initializers and the schema's defaults describe the same run: a
  // Config built in code (tests, plan, bench) behaves as a config file with no keys.
  const auto resolved = parse_config(kMinimal, "test.json", {});
  const auto from_schema = config_values(resolved.config);
  const auto from_struct = config_values(Config{});
  ASSERT_EQ(from_schema.size(), from_struct.size());
  for (std::size_t i = 0; i < from_schema.size(); ++i) {
    if (from_schema[i].first == "data.path") continue;  // required: no default
    EXPECT_EQ(from_struct[i], from_schema[i]) << "Config.hpp and the schema disagree on " << from_schema[i].first;
  }
  // And the values read back from a Config are the resolved JSON's.
  std::map<std::string, std::string> json_values;
  for (const auto& kv : flatten_config(resolved.resolved_json)) json_values.insert(kv);
  for (const auto& [key, value] : from_schema) EXPECT_EQ(json_values.at(key), value) << key;
}

TEST(MetricCatalog, SearchMetricChoicesAreTheCatalog) {
  for (const auto& spec : config_schema()) {
    if (spec.path != "search.metric") continue;
    ASSERT_EQ(spec.choices.size(), metric_catalog().size() + 1);
    EXPECT_EQ(spec.choices[0], "auto");
    for (std::size_t i = 0; i < metric_catalog().size(); ++i) EXPECT_EQ(spec.choices[i + 1], metric_catalog()[i].name);
  }
  EXPECT_TRUE(lower_is_better("loss"));
  EXPECT_TRUE(lower_is_better("rmse"));
  EXPECT_FALSE(lower_is_better("accuracy"));
  EXPECT_FALSE(lower_is_better("r2"));
  EXPECT_THROW(metric_info("acuracy"), std::exception);
  EXPECT_EQ(metric_names(true).front(), "loss");
  for (const auto& name : metric_names(false)) EXPECT_NE(metric_info(name).task, MetricTask::Classification) << name;
  // The defaults of search.metric=auto are in the catalog for their task.
  for (bool classification : {true, false}) {
    const auto names = metric_names(classification);
    EXPECT_NE(std::find(names.begin(), names.end(), default_metric(classification)), names.end());
  }
}
