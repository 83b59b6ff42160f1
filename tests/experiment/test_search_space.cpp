// Search spaces: parsing and its errors, ranges, grid order, random draws (deterministic,
// within bounds), and trial configs that replace whole sections and switch the search off.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "config/Schema.hpp"
#include "experiment/SearchSpace.hpp"
#include "util/Error.hpp"
#include "util/Json.hpp"

using namespace hpctrain;
namespace json = boost::json;

namespace {
std::string error_of(const std::string& space) {
  try {
    parse_search_space(space);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(SearchSpace, GridIsEveryCombinationFirstKeySlowest) {
  const auto space =
      parse_search_space(R"({"optimizer.lr": [0.1, 0.01], "train.batch_size": {"range": [32, 97, 32]}})");
  ASSERT_TRUE(space.is_grid());
  EXPECT_EQ(space.grid_size(), 6);
  const auto trials = grid_trials(space);
  ASSERT_EQ(trials.size(), 6u);
  EXPECT_EQ(compact_json(trials[0].assignments), R"({"optimizer.lr":0.1,"train.batch_size":32})");
  EXPECT_EQ(trials[2].assignments.at("train.batch_size").as_int64(), 96);
  EXPECT_EQ(trials[3].assignments.at("optimizer.lr").as_double(), 0.01);
  EXPECT_EQ(trials[3].assignments.at("train.batch_size").as_int64(), 32);
}

TEST(SearchSpace, RandomDrawsAreDeterministicAndInRange) {
  const auto space = parse_search_space(
      R"({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "model.dropout": {"uniform": [0, 0.5]},
          "model.fc_width": {"int_uniform": [16, 20]}, "optimizer.name": ["sgd", "adamw"]})");
  EXPECT_FALSE(space.is_grid());
  const auto a = random_trials(space, 50, 3), b = random_trials(space, 50, 3), c = random_trials(space, 50, 4);
  std::set<std::int64_t> widths;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(compact_json(a[i].assignments), compact_json(b[i].assignments));
    const double lr = a[i].assignments.at("optimizer.lr").as_double();
    EXPECT_GE(lr, 1e-4);
    EXPECT_LE(lr, 1e-1);
    const double p = a[i].assignments.at("model.dropout").as_double();
    EXPECT_GE(p, 0.0);
    EXPECT_LT(p, 0.5);
    widths.insert(a[i].assignments.at("model.fc_width").as_int64());
  }
  EXPECT_EQ(widths, (std::set<std::int64_t>{16, 17, 18, 19, 20}));
  EXPECT_NE(compact_json(a[0].assignments), compact_json(c[0].assignments));
  EXPECT_NE(error_of("{}"), "");
  EXPECT_THROW(grid_trials(space), ConfigError);
}

TEST(SearchSpace, ErrorsNameTheKey) {
  EXPECT_NE(error_of(R"({"optimizer.lrr": [1]})").find("\"optimizer.lrr\" is not a config key"), std::string::npos);
  EXPECT_NE(error_of(R"({"cv.folds": [2, 3]})").find("search.space.cv.folds"), std::string::npos);
  EXPECT_NE(error_of(R"({"data.path": ["a.h5"]})").find("every trial reads the same data"), std::string::npos);
  EXPECT_NE(error_of(R"({"optimizer.lr": []})").find("empty"), std::string::npos);
  EXPECT_NE(error_of(R"({"optimizer.lr": {"normal": [0, 1]}})").find("unknown form \"normal\""), std::string::npos);
  EXPECT_NE(error_of(R"({"optimizer.lr": {"log_uniform": [0, 1]}})").find("0 < low"), std::string::npos);
  EXPECT_NE(error_of(R"({"model": ["cnn"]})").find("each value must be an object"), std::string::npos);
  EXPECT_NE(error_of(R"({"optimizer.lr": 0.1})").find("expected a list of values"), std::string::npos);
}

TEST(SearchSpace, TrialConfigReplacesSectionsAndSwitchesSearchOff) {
  const json::object base = json::parse(R"({"data": {"path": "x.h5"}, "model": {"name": "cnn", "channels": [8]},
      "optimizer": {"lr": 0.1}, "cv": {"folds": 5}, "search": {"method": "grid"}})")
                                .as_object();
  json::object a;
  a["model"] = json::parse(R"({"name": "mlp", "hidden": [16]})");
  a["optimizer.lr"] = 0.5;
  const json::object c = trial_config(base, a);
  EXPECT_EQ(compact_json(c.at("model")), R"({"name":"mlp","hidden":[16]})");
  EXPECT_EQ(c.at("optimizer").as_object().at("lr").as_double(), 0.5);
  EXPECT_EQ(c.at("cv").as_object().at("folds").as_int64(), 0);
  EXPECT_EQ(c.at("search").as_object().at("method").as_string(), "none");
  // It is a valid config: the model section's other keys take their defaults.
  const ResolvedConfig r = parse_config(compact_json(c), "trial", {});
  EXPECT_EQ(r.config.model.name, "mlp");
  EXPECT_EQ(r.config.model.channels, (std::vector<std::int64_t>{32, 64}));
  EXPECT_EQ(describe_assignments(a), "model={\"name\":\"mlp\",\"hidden\":[16]} optimizer.lr=0.5");
  // A key inside a replaced section survives whichever comes first in the space.
  json::object b;
  b["model.dropout"] = 0.3;
  b["model"] = json::parse(R"({"name": "mlp"})");
  const json::object d = trial_config(base, b);
  EXPECT_EQ(d.at("model").as_object().at("dropout").as_double(), 0.3);
  EXPECT_EQ(d.at("model").as_object().at("name").as_string(), "mlp");
}
