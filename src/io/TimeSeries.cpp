#include "io/TimeSeries.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "io/CsvImporter.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

constexpr double kPi = 3.14159265358979323846;

// std::normal_distribution's algorithm is the library's choice; this one is ours, so a seed
// gives the same series with any standard library.
class Noise {
 public:
  explicit Noise(std::uint64_t seed) : engine_(seed) {}
  double uniform() { return (static_cast<double>(engine_() >> 11) + 0.5) / 9007199254740992.0; }
  double normal() {  // Box-Muller
    const double u = uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * kPi * v);
  }
  double exponential(double mean) { return -mean * std::log(uniform()); }

 private:
  std::mt19937_64 engine_;
};

// Hour of day and day of week as points on circles: no jump at midnight or on Monday.
void add_calendar(Series& s, const std::vector<double>& main) {
  s.names.insert(s.names.end(), {"hour_sin", "hour_cos", "weekday_sin", "weekday_cos"});
  const std::size_t v = s.names.size();
  s.values.assign(static_cast<std::size_t>(s.length) * v, 0.0F);
  for (std::int64_t t = 0; t < s.length; ++t) {
    const double hour = static_cast<double>(t % 24), day = static_cast<double>((t / 24) % 7);
    float* row = &s.values[static_cast<std::size_t>(t) * v];
    row[0] = static_cast<float>(main[static_cast<std::size_t>(t)]);
    row[1] = static_cast<float>(std::sin(2 * kPi * hour / 24));
    row[2] = static_cast<float>(std::cos(2 * kPi * hour / 24));
    row[3] = static_cast<float>(std::sin(2 * kPi * day / 7));
    row[4] = static_cast<float>(std::cos(2 * kPi * day / 7));
  }
}

std::string shortest(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

Series synthetic_series(const std::string& kind, std::int64_t length, std::uint64_t seed) {
  if (length < 2) throw UsageError("import synthetic: --length must be at least 2");
  Series s;
  s.length = length;
  s.season = 24;
  s.target = 0;
  Noise rng(seed);
  std::vector<double> y(static_cast<std::size_t>(length));
  if (kind == "seasonal") {
    s.name = "synthetic-seasonal";
    s.names = {"value"};
    double ar = 0.0;
    for (std::int64_t t = 0; t < length; ++t) {
      const double tt = static_cast<double>(t);
      ar = 0.7 * ar + 0.5 * rng.normal();
      y[static_cast<std::size_t>(t)] = 10.0 + 4.0 * tt / static_cast<double>(length) +
                                       3.0 * std::sin(2 * kPi * tt / 24) + 1.5 * std::sin(2 * kPi * tt / 168) + ar;
    }
  } else if (kind == "cpu") {
    s.name = "synthetic-cpu";
    s.names = {"cpu_percent"};
    // Running batch jobs: (end step, allocation in percent).
    std::vector<std::pair<std::int64_t, double>> jobs;
    double ar = 0.0;
    for (std::int64_t t = 0; t < length; ++t) {
      const std::int64_t hour = t % 24, day = (t / 24) % 7;
      const bool working_day = day < 5;
      // Interactive load: a plateau through office hours on working days, low otherwise.
      const double office =
          working_day ? 35.0 * std::exp(-std::pow((static_cast<double>(hour) - 13.5) / 3.5, 2.0)) : 4.0;
      const double backup = hour == 2 ? 25.0 : (hour == 3 ? 12.0 : 0.0);
      // Batch jobs: Poisson arrivals, more on working days; exponential durations.
      const double rate = working_day ? 0.25 : 0.1;
      while (rng.uniform() < rate) {
        const auto duration = static_cast<std::int64_t>(1 + rng.exponential(4.0));
        jobs.emplace_back(t + duration, 5.0 + 20.0 * rng.uniform());
      }
      double batch = 0.0;
      for (const auto& [end, share] : jobs) batch += share;
      jobs.erase(std::remove_if(jobs.begin(), jobs.end(), [&](const auto& j) { return j.first <= t + 1; }), jobs.end());
      ar = 0.8 * ar + 1.5 * rng.normal();
      y[static_cast<std::size_t>(t)] = std::clamp(8.0 + office + backup + batch + ar, 0.0, 100.0);
    }
  } else {
    throw UsageError("import synthetic: unknown series \"" + kind + "\" (seasonal or cpu)");
  }
  s.source = "synthetic " + kind + " (length " + std::to_string(length) + ", seed " + std::to_string(seed) + ")";
  add_calendar(s, y);
  return s;
}

Series read_series_csv(const std::string& path, const std::string& target, const std::vector<std::string>& drop) {
  if (target.empty()) throw UsageError("import timeseries: no --target column given");
  if (std::find(drop.begin(), drop.end(), target) != drop.end()) {
    throw UsageError("import timeseries: the target column \"" + target + "\" is also dropped");
  }
  NumericColumns t = read_numeric_csv(path, drop);
  const auto it = std::find(t.names.begin(), t.names.end(), target);
  if (it == t.names.end()) {
    std::string columns;
    for (const auto& n : t.names) columns += (columns.empty() ? "" : ", ") + n;
    throw DataError(path + ": no target column \"" + target + "\" (numeric columns: " + columns + ")");
  }
  Series s;
  s.name = path.substr(path.find_last_of('/') + 1);
  s.name = s.name.substr(0, s.name.rfind('.'));
  s.source = "csv " + path + " (target " + target + ")";
  s.names = std::move(t.names);
  s.values = std::move(t.values);
  s.length = t.rows;
  s.target = it - s.names.begin();
  return s;
}

ImportResult import_windows(const Series& s, const WindowOptions& o) {
  if (o.window < 1) throw UsageError("import: --window must be at least 1");
  if (o.horizon < 1) throw UsageError("import: --horizon must be at least 1");
  if (o.span < 1) throw UsageError("import: --span must be at least 1");
  if (!(o.test_fraction > 0 && o.test_fraction < 1)) {
    throw UsageError("import: --test-fraction must lie in (0, 1), found " + shortest(o.test_fraction));
  }
  if (o.output.empty()) throw UsageError("import: no output file given");
  const auto v = static_cast<std::int64_t>(s.names.size());
  // Sample i: steps [i, i + W) of every variable; targets: the target variable at steps
  // i + W - 1 + H ... i + W - 1 + H + S - 1.
  const std::int64_t reach = o.horizon + o.span - 1;  // steps from the window's end to its last target
  const std::int64_t samples = s.length - o.window - reach + 1;
  // The first target step that belongs to test; a sample is a training sample when its last
  // target comes before it.
  const std::int64_t cut = s.length - std::llround(o.test_fraction * static_cast<double>(s.length));
  const std::int64_t first_target = o.window - 1 + o.horizon;
  const std::int64_t last_target = o.window - 1 + reach;
  const std::int64_t n_train = std::clamp<std::int64_t>(cut - last_target, 0, std::max<std::int64_t>(samples, 0));
  const std::int64_t n_test = std::max<std::int64_t>(samples, 0) - n_train;
  if (n_train < 2 || n_test < 2) {
    throw DataError(s.source + ": " + std::to_string(s.length) + " steps give " + std::to_string(n_train) +
                    " training and " + std::to_string(n_test) + " test windows of " + std::to_string(o.window) +
                    " steps with horizon " + std::to_string(o.horizon) +
                    (o.span > 1 ? " and span " + std::to_string(o.span) : std::string()) + " (test fraction " +
                    shortest(o.test_fraction) + "); each split needs at least 2");
  }
  auto window_of = [&](std::int64_t i, std::vector<float>& features, std::vector<float>& targets) {
    for (std::int64_t var = 0; var < v; ++var) {
      for (std::int64_t k = 0; k < o.window; ++k) {
        features.push_back(s.values[static_cast<std::size_t>((i + k) * v + var)]);
      }
    }
    for (std::int64_t k = 0; k < o.span; ++k) {
      targets.push_back(s.values[static_cast<std::size_t>((i + first_target + k) * v + s.target)]);
    }
  };
  std::vector<float> train_x, train_y, test_x, test_y;
  train_x.reserve(static_cast<std::size_t>(n_train * v * o.window));
  test_x.reserve(static_cast<std::size_t>(n_test * v * o.window));
  for (std::int64_t i = 0; i < n_train; ++i) window_of(i, train_x, train_y);
  for (std::int64_t i = n_train; i < samples; ++i) window_of(i, test_x, test_y);

  ImportResult r;
  r.output = o.output;
  r.train_count = n_train;
  r.test_count = n_test;
  write_dataset_atomically(o.output, [&](H5File& out) {
    write_tabular_header(out, s.name, s.source, Task::Regression, s.names, {});
    out.write_int_attr("/", "window", o.window);
    out.write_int_attr("/", "horizon", o.horizon);
    out.write_int_attr("/", "span", o.span);
    out.write_int_attr("/", "target_variable", s.target);
    out.write_int_attr("/", "season", s.season);
    write_float_split(out, "train", {v, o.window}, train_x, train_y, o.span);
    write_float_split(out, "test", {v, o.window}, test_x, test_y, o.span);
  });
  return r;
}

}  // namespace hpctrain
