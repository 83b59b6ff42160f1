#pragma once
// The pipeline shapes the schedule tests cover: p in {2, 4, 8}, m in 1..4p; interleaved with
// v in {2, 3} and m a multiple of p (the others must be rejected).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "train/PipelineSchedule.hpp"

namespace hpctrain::testing {

inline void for_each_shape(const std::function<void(ScheduleKind, const PipelineShape&)>& body) {
  for (ScheduleKind kind : {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved}) {
    for (int p : {2, 4, 8}) {
      for (int m = 1; m <= 4 * p; ++m) {
        const bool interleaved = kind == ScheduleKind::Interleaved;
        if (interleaved && m % p != 0) continue;
        for (int v : interleaved ? std::vector<int>{2, 3} : std::vector<int>{1}) {
          const PipelineShape shape{p, m, v};
          SCOPED_TRACE(schedule_kind_name(kind) + " p=" + std::to_string(p) + " m=" + std::to_string(m) +
                       " v=" + std::to_string(v));
          body(kind, shape);
        }
      }
    }
  }
}

}  // namespace hpctrain::testing
