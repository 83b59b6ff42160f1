#include "app/Measurement.hpp"

#include <torch/torch.h>

#include <algorithm>

#include "launch/ProcessLayout.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::vector<double> time_per_op(const Communicator& comm, int repeats, int iters,
                                const std::vector<std::function<void()>>& ops, double gap_seconds) {
  std::vector<std::vector<double>> t(ops.size());
  for (const auto& op : ops) op();  // warm-up
  for (int r = 0; r < repeats; ++r) {
    for (std::size_t k = 0; k < ops.size(); ++k) {
      comm.barrier();
      double dt = 0;
      if (gap_seconds > 0) {
        for (int i = 0; i < iters; ++i) {
          // Busy, as compute keeps the core (after a sleep an idle core wakes slowly).
          for (const double end = wall_seconds() + gap_seconds; wall_seconds() < end;) {
          }
          comm.barrier();  // the ranks start together, as after a step's compute
          const double t0 = wall_seconds();
          ops[k]();
          dt += wall_seconds() - t0;
        }
      } else {
        const double t0 = wall_seconds();
        for (int i = 0; i < iters; ++i) ops[k]();
        dt = wall_seconds() - t0;
      }
      dt /= iters;
      comm.allreduce_max(&dt, 1);
      t[k].push_back(dt);
    }
  }
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}

void use_default_threads() {
  torch::set_num_threads(ProcessLayout::discover(MPI_COMM_WORLD).default_threads());
}

void write_json_file(const std::string& path, const boost::json::value& value) {
  if (path.empty()) return;
  write_file_atomic(path, pretty_json(value));
}

}  // namespace hpctrain
