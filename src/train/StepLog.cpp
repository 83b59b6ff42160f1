#include "train/StepLog.hpp"

#include <cmath>
#include <cstdio>

#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;

json::object to_json(const EpochRecord& e) {
  json::object o{{"epoch", e.epoch}, {"train_loss", e.train_loss}};
  if (e.classification) o["train_accuracy"] = e.train_accuracy;
  for (const auto& kv : json::object{{"lr", e.lr},
                                     {"seconds", e.seconds},
                                     {"samples_per_s", e.samples_per_s},
                                     {"train_seconds_total", e.train_seconds_total}}) {
    o[kv.key()] = kv.value();
  }
  if (e.has_validation) {
    o["val_loss"] = e.val_loss;
    if (e.classification) o["val_accuracy"] = e.val_accuracy;
  }
  if (e.has_test) {
    o["test_loss"] = e.test_loss;
    if (e.classification) o["test_accuracy"] = e.test_accuracy;
  }
  for (const auto& [key, value] : e.watched) o[key] = std::isfinite(value) ? json::value(value) : nullptr;
  return o;
}

EpochRecord epoch_record_from_json(const json::object& o) {
  auto num = [&](const char* key) { return o.contains(key) ? o.at(key).to_number<double>() : 0.0; };
  EpochRecord e;
  e.epoch = o.at("epoch").as_int64();
  e.classification = o.contains("train_accuracy");
  e.train_loss = num("train_loss");
  e.train_accuracy = num("train_accuracy");
  e.has_validation = o.contains("val_loss");
  e.val_loss = num("val_loss");
  e.val_accuracy = num("val_accuracy");
  e.has_test = o.contains("test_loss");
  e.test_loss = num("test_loss");
  e.test_accuracy = num("test_accuracy");
  e.lr = num("lr");
  e.seconds = num("seconds");
  e.samples_per_s = num("samples_per_s");
  e.train_seconds_total = num("train_seconds_total");
  for (const auto& kv : o) {
    const std::string key(kv.key());
    const bool split = key.rfind("val_", 0) == 0 || key.rfind("test_", 0) == 0;
    if (split && key != "val_loss" && key != "val_accuracy" && key != "test_loss" && key != "test_accuracy") {
      e.watched.emplace_back(key, kv.value().is_null() ? std::nan("") : kv.value().to_number<double>());
    }
  }
  return e;
}

void add_forecast_figures(json::object& out, const EvalResult& result, const std::string& prefix) {
  auto array = [](const std::vector<double>& values) {
    json::array a;
    for (double v : values) a.push_back(v);
    return a;
  };
  if (!result.quantile_coverage.empty()) {
    out[prefix + "quantile_loss"] = result.quantile_loss;
    out[prefix + "quantile_coverage"] = array(result.quantile_coverage);
  }
  if (!result.mae_per_step.empty()) out[prefix + "mae_per_step"] = array(result.mae_per_step);
}

json::object step_line(const StepFigures& f) {
  json::object line{{"type", "step"},          {"step", f.step}, {"epoch", f.epoch},
                    {"loss", f.loss},          {"lr", f.lr},     {"samples_per_s", f.samples_per_s},
                    {"elapsed_s", f.elapsed_s}};
  // JSON has no NaN: a skipped step's loss is null.
  if (f.skipped) line["loss"] = nullptr;
  if (f.skipped) line["skipped"] = true;
  if (f.nonfinite_skipped > 0) line["nonfinite_skipped"] = f.nonfinite_skipped;
  return line;
}

json::object epoch_line(const EpochRecord& record) {
  json::object line{{"type", "epoch"}};
  for (const auto& kv : to_json(record)) line[kv.key()] = kv.value();
  return line;
}

json::object test_line(const EvalResult& test, bool classification) {
  json::object line{{"type", "test"}, {"loss", test.loss}, {"samples", test.count}};
  if (classification) {
    line["accuracy"] = test.accuracy;
  } else {
    line["mse"] = test.mse;
    line["mae"] = test.mae;
    line["r2"] = std::isfinite(test.r2) ? json::value(test.r2) : json::value(nullptr);
    line["pearson"] = std::isfinite(test.pearson) ? json::value(test.pearson) : json::value(nullptr);
    add_forecast_figures(line, test, "");
  }
  return line;
}

std::string epoch_console_line(const std::string& prefix, const EpochRecord& rec) {
  char text[320];
  auto figures = [&](const char* what, double loss, double accuracy) {
    if (rec.classification) {
      std::snprintf(text, sizeof(text), "%s loss %.4f acc %.4f", what, loss, accuracy);
    } else {
      std::snprintf(text, sizeof(text), "%s loss %.4f", what, loss);
    }
    return std::string(text);
  };
  std::string line =
      prefix + "epoch " + std::to_string(rec.epoch) + ": " + figures("train", rec.train_loss, rec.train_accuracy);
  if (rec.has_validation) line += " | " + figures("val", rec.val_loss, rec.val_accuracy);
  if (rec.has_test) line += " | " + figures("test", rec.test_loss, rec.test_accuracy);
  std::snprintf(text, sizeof(text), " | %.0f samples/s | %.1f s", rec.samples_per_s, rec.seconds);
  return line + text;
}

StepLog::StepLog(MetricsLog& metrics, const RunConfig& run, bool root, std::int64_t total_steps, std::string prefix)
    : metrics_(metrics),
      progress_(run.progress, root, total_steps, run.log_every),
      root_(root),
      prefix_(std::move(prefix)) {}

void StepLog::step(const StepFigures& figures) {
  if (root_) metrics_.write(step_line(figures));
  progress_.step(figures.step, figures.epoch, figures.loss, figures.samples_per_s);
}

void StepLog::epoch(const EpochRecord& record) {
  if (!root_) return;
  metrics_.write(epoch_line(record));
  metrics_.sync();  // an epoch's lines survive a crash of the next
  progress_.message(epoch_console_line(prefix_, record));
}

void StepLog::test(const EvalResult& test, bool classification) {
  if (!root_) return;
  metrics_.write(test_line(test, classification));
  metrics_.sync();
}

void StepLog::checkpoint(const std::string& path) {
  message("checkpoint " + path);
}

void StepLog::message(const std::string& text) {
  if (root_) progress_.message(text);
}

void StepLog::finish() {
  progress_.finish();
}

}  // namespace hpctrain
