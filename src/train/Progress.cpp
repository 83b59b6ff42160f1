#include "train/Progress.hpp"

#include <unistd.h>

#include <cstdio>

#include "util/SystemStats.hpp"

namespace hpctrain {

std::string format_duration(double seconds) {
  if (seconds < 0) seconds = 0;
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

Progress::Progress(const std::string& setting, bool is_root, std::int64_t total_steps, std::int64_t line_every)
    : total_(total_steps), every_(line_every < 1 ? 1 : line_every), start_(wall_seconds()), root_(is_root) {
  if (!is_root || setting == "none") {
    mode_ = Mode::None;
  } else if (setting == "bar") {
    mode_ = Mode::Bar;
  } else if (setting == "lines") {
    mode_ = Mode::Lines;
  } else {
    mode_ = isatty(STDERR_FILENO) ? Mode::Bar : Mode::Lines;
  }
}

void Progress::step(std::int64_t step, std::int64_t epoch, double loss, double samples_per_s) {
  if (mode_ == Mode::None) return;
  const double elapsed = wall_seconds() - start_;
  const double eta = step > 0 ? elapsed / static_cast<double>(step) * static_cast<double>(total_ - step) : 0.0;
  if (mode_ == Mode::Lines) {
    if (step % every_ != 0 && step != total_) return;
    std::fprintf(stderr, "step %lld/%lld epoch %lld loss %.4f %.0f samples/s elapsed %s eta %s\n",
                 static_cast<long long>(step), static_cast<long long>(total_), static_cast<long long>(epoch), loss,
                 samples_per_s, format_duration(elapsed).c_str(), format_duration(eta).c_str());
    return;
  }
  const int width = 30;
  const int filled = total_ > 0 ? static_cast<int>(width * step / total_) : width;
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld epoch %lld loss %.4f %.0f samples/s eta %s   ", bar.c_str(),
               static_cast<long long>(step), static_cast<long long>(total_), static_cast<long long>(epoch), loss,
               samples_per_s, format_duration(eta).c_str());
  std::fflush(stderr);
  bar_drawn_ = true;
}

void Progress::message(const std::string& text) {
  if (!root_) return;
  if (mode_ == Mode::None) {
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
    return;
  }
  if (bar_drawn_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", text.c_str());
  bar_drawn_ = false;
}

void Progress::finish() {
  if (mode_ == Mode::Bar && bar_drawn_) std::fprintf(stderr, "\n");
  bar_drawn_ = false;
}

}  // namespace hpctrain
