#include "experiment/TaskOutcome.hpp"

#include <cmath>

#include "util/Error.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

const json::value& field(const json::object& o, const char* key) {
  const auto it = o.find(key);
  if (it == o.end()) throw DataError(std::string("task outcome: no \"") + key + "\"");
  return it->value();
}

std::int64_t integer(const json::object& o, const char* key) {
  const json::value& v = field(o, key);
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return static_cast<std::int64_t>(v.get_uint64());
  if (v.is_double() && std::trunc(v.get_double()) == v.get_double()) return static_cast<std::int64_t>(v.get_double());
  throw DataError(std::string("task outcome: \"") + key + "\" is not an integer");
}

double number(const json::object& o, const char* key) {
  const json::value& v = field(o, key);
  if (!v.is_number() && !v.is_null()) throw DataError(std::string("task outcome: \"") + key + "\" is not a number");
  return json_number(v);
}

std::string text(const json::object& o, const char* key) {
  const json::value& v = field(o, key);
  if (!v.is_string()) throw DataError(std::string("task outcome: \"") + key + "\" is not a string");
  return std::string(v.get_string());
}

const json::array& array(const json::object& o, const char* key) {
  const json::value& v = field(o, key);
  if (!v.is_array()) throw DataError(std::string("task outcome: \"") + key + "\" is not an array");
  return v.get_array();
}

template <typename T>
json::array to_array(const std::vector<T>& values) {
  json::array a;
  a.reserve(values.size());
  for (const T& x : values) a.push_back(x);
  return a;
}

std::vector<double> doubles(const json::array& a) {
  std::vector<double> out;
  out.reserve(a.size());
  for (const auto& v : a) out.push_back(json_number(v));
  return out;
}

HeldOutPredictions predictions_from_json(const json::object& p) {
  HeldOutPredictions out;
  for (const auto& v : array(p, "index")) {
    if (!v.is_int64()) throw DataError("task outcome: \"predictions.index\" holds a non-integer");
    out.index.push_back(v.get_int64());
  }
  out.target = doubles(array(p, "target"));
  out.loss = doubles(array(p, "loss"));
  out.outputs = doubles(array(p, "outputs"));
  return out;
}

std::vector<std::vector<std::int64_t>> confusion_from_json(const json::array& rows) {
  std::vector<std::vector<std::int64_t>> out;
  for (const auto& row : rows) {
    if (!row.is_array()) throw DataError("task outcome: \"confusion\" is not a matrix");
    std::vector<std::int64_t> counts;
    for (const auto& v : row.get_array()) {
      if (!v.is_int64()) throw DataError("task outcome: \"confusion\" holds a non-integer");
      counts.push_back(v.get_int64());
    }
    out.push_back(std::move(counts));
  }
  return out;
}

// What only an ok outcome has, in the order the fold runner writes it.
void put_results(json::object& out, const TaskOutcome& o) {
  if (o.confusion) {
    json::array rows;
    for (const auto& row : *o.confusion) rows.push_back(to_array(row));
    out["confusion"] = std::move(rows);
  }
  out["metrics"] = o.metrics;
  out["train_seconds"] = o.train_seconds;
  out["samples_per_s"] = o.samples_per_s;
  out["parameters"] = o.parameters;
  out["steps"] = o.steps;
  out["stop_reason"] = o.stop_reason;
  out["epoch_records"] = o.epoch_records;
  if (o.predictions) {
    out["predictions"] = json::object{{"index", to_array(o.predictions->index)},
                                      {"target", to_array(o.predictions->target)},
                                      {"loss", to_array(o.predictions->loss)},
                                      {"outputs", to_array(o.predictions->outputs)}};
  } else if (o.predictions_dropped && o.rung) {
    out["rung"] = *o.rung;
  }
}

void get_results(TaskOutcome& o, const json::object& in) {
  if (in.contains("confusion")) o.confusion = confusion_from_json(array(in, "confusion"));
  const json::value& metrics = field(in, "metrics");
  if (!metrics.is_object()) throw DataError("task outcome: \"metrics\" is not an object");
  o.metrics = metrics.get_object();
  o.train_seconds = number(in, "train_seconds");
  o.samples_per_s = number(in, "samples_per_s");
  o.parameters = integer(in, "parameters");
  o.steps = integer(in, "steps");
  o.stop_reason = text(in, "stop_reason");
  o.epoch_records = array(in, "epoch_records");
  if (in.contains("predictions")) {
    const json::value& p = field(in, "predictions");
    if (!p.is_object()) throw DataError("task outcome: \"predictions\" is not an object");
    o.predictions = predictions_from_json(p.get_object());
  }
}

}  // namespace

const char* to_string(TaskStatus status) {
  switch (status) {
    case TaskStatus::Ok:
      return "ok";
    case TaskStatus::Failed:
      return "failed";
    case TaskStatus::Preempted:
      return "preempted";
  }
  return "failed";
}

TaskStatus parse_task_status(const std::string& text) {
  for (TaskStatus s : {TaskStatus::Ok, TaskStatus::Failed, TaskStatus::Preempted}) {
    if (text == to_string(s)) return s;
  }
  throw DataError("task outcome: unknown status \"" + text + "\"");
}

double TaskOutcome::metric(const std::string& name) const {
  const auto it = metrics.find(name);
  return it == metrics.end() ? std::nan("") : json_number(it->value());
}

json::object to_json(const TaskOutcome& o) {
  json::object out{{"trial", o.trial}, {"repeat", o.repeat}, {"fold", o.fold}};
  if (!o.ran) {
    if (o.rung) out["rung"] = *o.rung;
    out["epochs"] = o.epochs;
    out["status"] = to_string(o.status);
    out["error"] = o.error;
    return out;
  }
  out["epochs"] = o.epochs;
  out["group"] = o.group;
  out["ranks"] = o.ranks;
  out["train_samples"] = o.train_samples;
  out["held_out_samples"] = o.held_out_samples;
  out["status"] = to_string(o.status);
  if (o.ok()) {
    put_results(out, o);
  } else {
    out["error"] = o.error;
  }
  out["wall_seconds"] = o.wall_seconds;
  if (o.rung && !out.contains("rung")) out["rung"] = *o.rung;
  return out;
}

TaskOutcome task_outcome_from_json(const json::object& in) {
  TaskOutcome o;
  o.trial = static_cast<int>(integer(in, "trial"));
  o.repeat = static_cast<int>(integer(in, "repeat"));
  o.fold = static_cast<int>(integer(in, "fold"));
  o.epochs = integer(in, "epochs");
  o.status = parse_task_status(text(in, "status"));
  o.ran = in.contains("group");
  if (o.ran) {
    o.group = static_cast<int>(integer(in, "group"));
    o.ranks = static_cast<int>(integer(in, "ranks"));
    o.train_samples = integer(in, "train_samples");
    o.held_out_samples = integer(in, "held_out_samples");
    o.wall_seconds = number(in, "wall_seconds");
  }
  if (o.ok()) {
    get_results(o, in);
  } else {
    o.error = text(in, "error");
  }
  if (in.contains("rung")) {
    o.rung = static_cast<int>(integer(in, "rung"));
    const auto before_wall = [&in] {
      for (const auto& kv : in) {
        if (kv.key() == "rung") return true;
        if (kv.key() == "wall_seconds") return false;
      }
      return false;
    };
    o.predictions_dropped = o.ok() && !o.predictions && before_wall();
  }
  return o;
}

std::string to_json_text(const TaskOutcome& outcome) {
  return compact_json(to_json(outcome));
}

TaskOutcome parse_task_outcome(const std::string& text) {
  json::value v;
  try {
    v = json::parse(text);
  } catch (const std::exception& e) {
    throw DataError(std::string("task outcome: invalid JSON (") + e.what() + ")");
  }
  if (!v.is_object()) throw DataError("task outcome: not a JSON object");
  return task_outcome_from_json(v.get_object());
}

std::string split_name(int repeat, int fold) {
  if (fold < 0) return "holdout";
  return "repeat" + std::to_string(repeat) + "_fold" + std::to_string(fold);
}

double json_number(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return std::nan("");
}

}  // namespace hpctrain
