#pragma once
// Rank 0's progress display: a redrawn bar with ETA on a terminal, plain periodic lines in
// batch jobs (stderr not a terminal), or nothing.
#include <cstdint>
#include <string>

namespace hpctrain {

class Progress {
 public:
  enum class Mode { Bar, Lines, None };
  // `setting` is run.progress: auto | bar | lines | none. Non-zero ranks get None.
  Progress(const std::string& setting, bool is_root, std::int64_t total_steps, std::int64_t line_every);
  void step(std::int64_t step, std::int64_t epoch, double loss, double samples_per_s);
  void message(const std::string& text);  // a full line, above the bar
  void finish();
  Mode mode() const { return mode_; }

 private:
  Mode mode_;
  std::int64_t total_;
  std::int64_t every_;
  double start_;
  bool bar_drawn_ = false;
  bool root_ = false;
};

std::string format_duration(double seconds);

}  // namespace hpctrain
