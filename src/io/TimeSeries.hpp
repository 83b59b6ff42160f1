#pragma once
// Time series into the HDF5 layout (docs/data-format.md, "Time series"): a multivariate
// series of L steps is cut into windows of W steps of all V variables, each sample the
// float32 [V, W] window (variables as channels, time last) and its target, the target
// variable H steps after the window's last step, or with a span S > 1 its S consecutive
// values H, H+1, ..., H+S-1 steps after it (targets [N, S]). Train and test split in time:
// test samples are those whose last target lies in the last test fraction of the series, so
// no test target was seen in training.
#include <cstdint>
#include <string>
#include <vector>

#include "io/Importer.hpp"

namespace hpctrain {

struct Series {
  std::string name;                // data-set name attribute
  std::string source;              // source attribute
  std::vector<std::string> names;  // V variable names
  std::vector<float> values;       // row-major [length, V]
  std::int64_t length = 0;
  std::int64_t target = 0;  // index of the forecast variable
  std::int64_t season = 0;  // steps of the dominant season (0: unknown); for seasonal-naive baselines
};

struct WindowOptions {
  std::int64_t window = 96;
  std::int64_t horizon = 1;
  std::int64_t span = 1;  // consecutive target steps per sample, from `horizon` on
  double test_fraction = 0.2;
  std::string output;
};

// Writes the windows of `series` (atomically: temporary file, then rename). DataError when
// the series is too short for a window, a horizon and two samples per split; UsageError
// for a bad option.
ImportResult import_windows(const Series& series, const WindowOptions& options);

// `hpctrain import timeseries FILE.csv`: every column but `drop` is a variable; `target`
// names the forecast one.
Series read_series_csv(const std::string& path, const std::string& target, const std::vector<std::string>& drop);

// Reproducible synthetic series (the same seed gives the same bytes on every machine):
// "seasonal": hourly steps, a linear trend, daily and weekly seasons and AR(1) noise;
// "cpu": a server's CPU allocation in percent: office-hours load on working days, a nightly
// backup, batch jobs arriving at random with random sizes and durations, clipped to
// [0, 100]. Both add four calendar variables (hour and weekday as sine and cosine).
Series synthetic_series(const std::string& kind, std::int64_t length, std::uint64_t seed);

}  // namespace hpctrain
