#pragma once
// Wall time per phase of a training step, accumulated on each rank.
#include <array>
#include <cstddef>

#include "util/SystemStats.hpp"

namespace hpctrain {

// CommExposed is the wait for gradient reductions after backward (what overlap did not
// hide); the reductions' own duration is reported apart as comm_total.
enum class Phase : std::size_t { Data, Forward, Backward, CommExposed, Optimizer, Eval, Count };

inline const char* phase_name(Phase p) {
  static const char* names[] = {"data", "forward", "backward", "comm_exposed", "optimizer", "eval"};
  return names[static_cast<std::size_t>(p)];
}

class PhaseTimer {
 public:
  // Charges the time since the previous mark (or construction) to `phase`.
  void mark(Phase phase) {
    const double now = wall_seconds();
    seconds_[static_cast<std::size_t>(phase)] += now - last_;
    last_ = now;
  }
  void restart() { last_ = wall_seconds(); }
  // Charges `seconds` measured elsewhere (a GPU's event timeline) to `phase`.
  void add(Phase phase, double seconds) { seconds_[static_cast<std::size_t>(phase)] += seconds; }
  double seconds(Phase phase) const { return seconds_[static_cast<std::size_t>(phase)]; }
  const std::array<double, static_cast<std::size_t>(Phase::Count)>& all() const { return seconds_; }

 private:
  std::array<double, static_cast<std::size_t>(Phase::Count)> seconds_{};
  double last_ = wall_seconds();
};

}  // namespace hpctrain
