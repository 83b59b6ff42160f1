#include "run/MonitorLog.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <string>
#include <utility>

#include "util/SystemStats.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

constexpr int kTag = 7301;
enum Column : std::size_t { Sequence, Last, Cpu, Rss, GpuUtil, GpuMemory, GpuPower };

// min, mean, max over the ranks that have the figure (>= 0), and the rank of the max.
json::value over_ranks(const std::vector<double>& rows, int ranks, Column c) {
  double mn = 0, mx = -1, sum = 0;
  int count = 0, max_rank = -1;
  for (int r = 0; r < ranks; ++r) {
    const double* row = rows.data() + static_cast<std::size_t>(r) * MonitorLog::kWidth;
    if (row[Sequence] <= 0 || row[c] < 0) continue;
    mn = count == 0 ? row[c] : std::min(mn, row[c]);
    if (row[c] > mx) {
      mx = row[c];
      max_rank = r;
    }
    sum += row[c];
    ++count;
  }
  if (count == 0) return nullptr;
  return json::object{{"min", mn}, {"mean", sum / count}, {"max", mx}, {"max_rank", max_rank}};
}

void fill_row(double* row, const SystemSample& s, bool last) {
  row[Sequence] = static_cast<double>(s.sequence);
  row[Last] = last ? 1.0 : 0.0;
  row[Cpu] = s.cpu_utilization;
  row[Rss] = s.rss_bytes;
  row[GpuUtil] = s.gpu_utilization;
  row[GpuMemory] = s.gpu_memory_bytes;
  row[GpuPower] = s.gpu_power_w;
}

}  // namespace

MonitorLog::MonitorLog(double interval_s, int gpu_ordinal, const Communicator& world, MetricsLog* log) : log_(log) {
  if (interval_s <= 0) return;
  comm_ = std::make_unique<Communicator>(world.split(0, world.rank()));
  monitor_ = std::make_unique<SystemMonitor>(interval_s, gpu_ordinal);
  start_ = wall_seconds();
  const auto ranks = static_cast<std::size_t>(comm_->size());
  if (comm_->rank() == 0) {
    latest_.assign(ranks * kWidth, 0.0);
    incoming_.assign(ranks * kWidth, 0.0);
    receives_.resize(ranks);
    for (std::size_t r = 1; r < ranks; ++r) {
      receives_[r] = std::make_unique<Request>(
          comm_->irecv(&incoming_[r * kWidth], kWidth * sizeof(double), static_cast<int>(r), kTag));
    }
  } else {
    outgoing_.assign(kWidth, 0.0);
  }
}

// Only an error path leaves requests open (finish() completes them all): a Request's
// destructor would wait for a receive that no rank will match, so they are let go instead;
// the process is on its way to MPI_Abort.
MonitorLog::~MonitorLog() {
  if (finished_) return;
  for (auto& r : receives_) static_cast<void>(r.release());
  static_cast<void>(send_.release());
}

void MonitorLog::on_callback() {
  if (!monitor_ || finished_) return;
  const double begin = wall_seconds();
  if (comm_->rank() == 0) {
    receive_ready(false);
    if (monitor_->latest().sequence > written_sequence_) write_line();
  } else if (monitor_->latest().sequence > sent_sequence_ && (!send_ || send_->test())) {
    send_latest(false);
  }
  monitor_->add_main_seconds(wall_seconds() - begin);
}

void MonitorLog::send_latest(bool last) {
  const SystemSample s = monitor_->latest();
  fill_row(outgoing_.data(), s, last);
  sent_sequence_ = s.sequence;
  send_ = std::make_unique<Request>(comm_->isend(outgoing_.data(), kWidth * sizeof(double), 0, kTag));
}

// Rank 0: takes in every receive that completed (or, at the end, waits for each rank's last
// row) and posts the next one.
void MonitorLog::receive_ready(bool wait_for_last) {
  for (std::size_t r = 1; r < receives_.size(); ++r) {
    while (receives_[r]) {
      if (wait_for_last) {
        receives_[r]->wait();
      } else if (!receives_[r]->test()) {
        break;
      }
      std::copy_n(&incoming_[r * kWidth], kWidth, &latest_[r * kWidth]);
      receives_[r].reset();
      if (latest_[r * kWidth + Last] > 0) break;  // that rank sends no more
      receives_[r] = std::make_unique<Request>(
          comm_->irecv(&incoming_[r * kWidth], kWidth * sizeof(double), static_cast<int>(r), kTag));
      if (!wait_for_last) break;
    }
  }
}

void MonitorLog::write_line() {
  const SystemSample s = monitor_->latest();
  fill_row(latest_.data(), s, false);
  written_sequence_ = s.sequence;
  if (!log_ || !log_->enabled()) return;
  const int ranks = comm_->size();
  int sampled = 0;
  for (int r = 0; r < ranks; ++r) sampled += latest_[static_cast<std::size_t>(r) * kWidth + Sequence] > 0 ? 1 : 0;
  json::object line{{"type", "system"},
                    {"after_step", log_->last_step()},
                    {"elapsed_s", wall_seconds() - start_},
                    {"ranks_sampled", sampled},
                    {"cpu_utilization", over_ranks(latest_, ranks, Cpu)},
                    {"rss_bytes", over_ranks(latest_, ranks, Rss)}};
  const std::pair<const char*, Column> gpu[] = {
      {"gpu_utilization", GpuUtil}, {"gpu_memory_bytes", GpuMemory}, {"gpu_power_w", GpuPower}};
  for (const auto& [name, column] : gpu) {
    json::value v = over_ranks(latest_, ranks, column);
    if (!v.is_null()) line[name] = std::move(v);
  }
  line["nvml"] = monitor_->summary().nvml;
  log_->write(line);
}

void MonitorLog::finish() {
  if (!monitor_ || finished_) return;
  finished_ = true;
  const double begin = wall_seconds();
  if (comm_->rank() == 0) {
    receive_ready(true);
    if (monitor_->latest().sequence > 0) write_line();
  } else {
    if (send_) send_->wait();
    send_latest(true);
    send_->wait();
  }
  monitor_->add_main_seconds(wall_seconds() - begin);
}

}  // namespace hpctrain
