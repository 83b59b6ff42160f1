#include "train/PipelineSchedule.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "util/Error.hpp"

namespace hpctrain {

namespace {

const char* op_code(PipeOp op) {
  switch (op) {
    case PipeOp::RecvActivation:
      return "RA";
    case PipeOp::Forward:
      return "F";
    case PipeOp::SendActivation:
      return "SA";
    case PipeOp::RecvGradient:
      return "RG";
    case PipeOp::Backward:
      return "B";
    case PipeOp::SendGradient:
      return "SG";
  }
  return "?";
}

std::string token(const PipeAction& a) {
  return op_code(a.op) + std::to_string(a.microbatch) + "." + std::to_string(a.chunk);
}

std::string on_rank(int rank, const PipeAction& a) {
  return "rank " + std::to_string(rank) + " " + token(a);
}

// Appends one rank's actions, each compute with the receive before it and the send after it
// wherever the neighbouring virtual stage exists.
struct ActionWriter {
  const PipelineShape& shape;
  int stage;
  std::vector<PipeAction> out;

  bool first(int chunk) const { return virtual_stage(shape, stage, chunk) == 0; }
  bool last(int chunk) const { return virtual_stage(shape, stage, chunk) == shape.stages * shape.chunks - 1; }
  void forward(int mb, int chunk) {
    if (!first(chunk)) out.push_back({PipeOp::RecvActivation, mb, chunk});
    out.push_back({PipeOp::Forward, mb, chunk});
    if (!last(chunk)) out.push_back({PipeOp::SendActivation, mb, chunk});
  }
  void backward(int mb, int chunk) {
    if (!last(chunk)) out.push_back({PipeOp::RecvGradient, mb, chunk});
    out.push_back({PipeOp::Backward, mb, chunk});
    if (!first(chunk)) out.push_back({PipeOp::SendGradient, mb, chunk});
  }
};

void write_gpipe(ActionWriter& w) {
  for (int mb = 0; mb < w.shape.microbatches; ++mb) w.forward(mb, 0);
  for (int mb = 0; mb < w.shape.microbatches; ++mb) w.backward(mb, 0);
}

// Stage s runs p-s-1 forwards ahead, exactly enough to keep the stages after it busy until
// the first gradient comes back; from then on each forward is paired with the oldest backward.
void write_1f1b(ActionWriter& w) {
  const int m = w.shape.microbatches;
  const int warmup = warmup_forwards(ScheduleKind::OneFOneB, w.shape, w.stage);
  for (int i = 0; i < warmup; ++i) w.forward(i, 0);
  for (int i = 0; i < m - warmup; ++i) {
    w.forward(warmup + i, 0);
    w.backward(i, 0);
  }
  for (int i = m - warmup; i < m; ++i) w.backward(i, 0);
}

// Megatron's interleaved order. The k-th forward of a rank (k < m*v) takes, within its group
// of p*v, chunk (k mod p*v) / p and microbatch (k / (p*v)) * p + k mod p: p microbatches
// through chunk 0, the same p through chunk 1, ... The k-th backward takes the chunks in
// reverse order. Warm-up: (v-1)*p forwards to fill the other chunks plus 2*(p-s-1), Megatron's
// allowance for the first microbatch's trip to the last rank and its gradient's trip back,
// counted in chunk-steps. Capped at m*v;
// like current Megatron there is no special case for m == p (older releases ran all forwards
// first there), and the simulated bubble equals the theory for m == p as for larger m.
void write_interleaved(ActionWriter& w) {
  const int p = w.shape.stages, v = w.shape.chunks;
  const int total = w.shape.microbatches * v;
  const int warmup = warmup_forwards(ScheduleKind::Interleaved, w.shape, w.stage);
  auto microbatch = [&](int k) { return (k / (p * v)) * p + k % p; };
  auto chunk = [&](int k, bool forward) {
    const int c = (k % (p * v)) / p;
    return forward ? c : v - 1 - c;
  };
  for (int k = 0; k < warmup; ++k) w.forward(microbatch(k), chunk(k, true));
  for (int k = 0; k < total - warmup; ++k) {
    w.forward(microbatch(k + warmup), chunk(k + warmup, true));
    w.backward(microbatch(k), chunk(k, false));
  }
  for (int k = std::max(total - warmup, 0); k < total; ++k) w.backward(microbatch(k), chunk(k, false));
}

std::string shape_problem(const std::vector<std::vector<PipeAction>>& table, const PipelineShape& shape) {
  if (shape.stages < 1 || shape.microbatches < 1 || shape.chunks < 1) return "the shape needs p, m, v >= 1";
  if (static_cast<int>(table.size()) != shape.stages) {
    return "the table has " + std::to_string(table.size()) + " ranks for " + std::to_string(shape.stages) + " stages";
  }
  for (std::size_t rank = 0; rank < table.size(); ++rank) {
    for (const PipeAction& a : table[rank]) {
      if (a.microbatch < 0 || a.microbatch >= shape.microbatches || a.chunk < 0 || a.chunk >= shape.chunks)
        return on_rank(static_cast<int>(rank), a) + " is outside " + std::to_string(shape.microbatches) +
               " microbatches and " + std::to_string(shape.chunks) + " chunks";
    }
  }
  return "";
}

}  // namespace

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::GPipe;
  if (name == "1f1b") return ScheduleKind::OneFOneB;
  if (name == "interleaved") return ScheduleKind::Interleaved;
  throw ConfigError("parallel.schedule = \"" + name + "\" is not a pipeline schedule; use gpipe, 1f1b or interleaved");
}

std::string schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::GPipe:
      return "gpipe";
    case ScheduleKind::OneFOneB:
      return "1f1b";
    case ScheduleKind::Interleaved:
      return "interleaved";
  }
  return "?";
}

int warmup_forwards(ScheduleKind kind, const PipelineShape& shape, int stage) {
  const int p = shape.stages, v = shape.chunks, total = shape.microbatches * v;
  switch (kind) {
    case ScheduleKind::GPipe:
      return total;
    case ScheduleKind::OneFOneB:
      return std::min(p - stage - 1, total);
    case ScheduleKind::Interleaved:
      return std::min((p - stage - 1) * 2 + (v - 1) * p, total);
  }
  return total;
}

int virtual_stage(const PipelineShape& shape, int stage, int chunk) {
  return chunk * shape.stages + stage;
}

void check_pipeline_shape(ScheduleKind kind, const PipelineShape& shape) {
  const std::string p = std::to_string(shape.stages), m = std::to_string(shape.microbatches),
                    v = std::to_string(shape.chunks);
  if (shape.stages < 1) throw ConfigError("parallel.pipeline_stages must be at least 1 (got " + p + ")");
  if (shape.microbatches < 1) throw ConfigError("parallel.microbatches must be at least 1 (got " + m + ")");
  if (kind != ScheduleKind::Interleaved) {
    if (shape.chunks != 1)
      throw ConfigError("parallel.chunks = " + v + " needs parallel.schedule = interleaved; set parallel.chunks = 1 (" +
                        schedule_kind_name(kind) + " runs one chunk per stage)");
    return;
  }
  if (shape.stages < 2)
    throw ConfigError("parallel.schedule = interleaved needs parallel.pipeline_stages >= 2 (got " + p +
                      "); use 1f1b or more stages");
  if (shape.chunks < 2)
    throw ConfigError("parallel.schedule = interleaved needs parallel.chunks >= 2 (got " + v +
                      "); set parallel.chunks = 2 or use parallel.schedule = 1f1b");
  if (shape.microbatches % shape.stages != 0) {
    const int lower = shape.microbatches / shape.stages * shape.stages;
    const int upper = lower + shape.stages;
    std::string options = lower > 0 ? std::to_string(lower) + " or " + std::to_string(upper) : std::to_string(upper);
    throw ConfigError("parallel.schedule = interleaved needs parallel.microbatches (" + m +
                      ") to be a multiple of parallel.pipeline_stages (" + p +
                      "); set parallel.microbatches = " + options);
  }
}

std::vector<PipeAction> pipeline_actions(ScheduleKind kind, const PipelineShape& shape, int stage) {
  check_pipeline_shape(kind, shape);
  if (stage < 0 || stage >= shape.stages)
    throw std::out_of_range("pipeline stage " + std::to_string(stage) + " outside 0.." +
                            std::to_string(shape.stages - 1));
  ActionWriter w{shape, stage, {}};
  switch (kind) {
    case ScheduleKind::GPipe:
      write_gpipe(w);
      break;
    case ScheduleKind::OneFOneB:
      write_1f1b(w);
      break;
    case ScheduleKind::Interleaved:
      write_interleaved(w);
      break;
  }
  return w.out;
}

std::vector<std::vector<PipeAction>> pipeline_table(ScheduleKind kind, const PipelineShape& shape) {
  check_pipeline_shape(kind, shape);
  std::vector<std::vector<PipeAction>> table;
  for (int s = 0; s < shape.stages; ++s) table.push_back(pipeline_actions(kind, shape, s));
  return table;
}

std::string format_actions(const std::vector<PipeAction>& actions) {
  std::string line;
  for (const PipeAction& a : actions) {
    if (!line.empty()) line += ' ';
    line += token(a);
  }
  return line;
}

std::string check_table(const std::vector<std::vector<PipeAction>>& table, const PipelineShape& shape) {
  if (std::string problem = shape_problem(table, shape); !problem.empty()) return problem;
  const int last = shape.stages * shape.chunks - 1;
  constexpr int kOps = 6;
  for (int rank = 0; rank < shape.stages; ++rank) {
    // Per (microbatch, chunk) and op: how often it occurs and where (its last occurrence).
    const std::size_t pairs = static_cast<std::size_t>(shape.microbatches) * shape.chunks;
    std::vector<int> count(pairs * kOps, 0), where(pairs * kOps, -1);
    const auto& actions = table[rank];
    for (std::size_t i = 0; i < actions.size(); ++i) {
      const auto& a = actions[i];
      const std::size_t at =
          (static_cast<std::size_t>(a.microbatch) * shape.chunks + a.chunk) * kOps + static_cast<std::size_t>(a.op);
      ++count[at];
      where[at] = static_cast<int>(i);
    }
    for (int mb = 0; mb < shape.microbatches; ++mb) {
      for (int c = 0; c < shape.chunks; ++c) {
        const int k = virtual_stage(shape, rank, c);
        const std::size_t base = (static_cast<std::size_t>(mb) * shape.chunks + c) * kOps;
        auto n = [&](PipeOp op) { return count[base + static_cast<std::size_t>(op)]; };
        auto pos = [&](PipeOp op) { return where[base + static_cast<std::size_t>(op)]; };
        const std::string who = "rank " + std::to_string(rank) + " microbatch " + std::to_string(mb) + " chunk " +
                                std::to_string(c) + " (virtual stage " + std::to_string(k) + ")";
        if (n(PipeOp::Forward) != 1 || n(PipeOp::Backward) != 1)
          return who + " has " + std::to_string(n(PipeOp::Forward)) + " forwards and " +
                 std::to_string(n(PipeOp::Backward)) + " backwards, not one each";
        if (pos(PipeOp::Backward) < pos(PipeOp::Forward)) return who + ": backward before forward";
        const struct {
          PipeOp op;
          bool needed;
          PipeOp compute;
          bool before;
        } comms[] = {{PipeOp::RecvActivation, k > 0, PipeOp::Forward, true},
                     {PipeOp::SendActivation, k < last, PipeOp::Forward, false},
                     {PipeOp::RecvGradient, k < last, PipeOp::Backward, true},
                     {PipeOp::SendGradient, k > 0, PipeOp::Backward, false}};
        for (const auto& rule : comms) {
          const PipeAction a{rule.op, mb, c};
          if (n(rule.op) != (rule.needed ? 1 : 0))
            return who + " has " + std::to_string(n(rule.op)) + " " + op_code(rule.op) + " where " +
                   (rule.needed ? "one is needed" : "no peer exists");
          if (rule.needed && (pos(rule.op) < pos(rule.compute)) != rule.before)
            return on_rank(rank, a) + (rule.before ? " comes after " : " comes before ") + token({rule.compute, mb, c});
        }
      }
    }
  }
  return "";
}

namespace {

// One rank of the simulated machine: where it is in its list, its clock, what it holds.
struct SimRank {
  std::size_t next = 0;
  double clock = 0;
  int in_flight = 0, peak = 0;
  // Per (microbatch, chunk): bit 0 activation received, 1 forwarded, 2 gradient received, 3 backwarded.
  std::vector<unsigned char> done;
};

enum : unsigned char { kGotActivation = 1, kForwarded = 2, kGotGradient = 4, kBackwarded = 8 };

class Simulator {
 public:
  Simulator(const std::vector<std::vector<PipeAction>>& table, const PipelineShape& shape, double forward,
            double backward)
      : table_(table), shape_(shape), forward_(forward / shape.chunks), backward_(backward / shape.chunks) {
    const std::size_t pairs = static_cast<std::size_t>(shape.microbatches) * shape.chunks;
    ranks_.resize(table.size());
    for (auto& r : ranks_) r.done.assign(pairs, 0);
    // Messages in flight, by direction, receiving virtual stage and microbatch: their send times.
    mailbox_.resize(2 * pairs * shape.stages);
  }

  Simulation run() {
    Simulation out;
    for (bool moved = true; moved && problem_.empty();) {
      moved = false;
      for (int rank = 0; rank < shape_.stages && problem_.empty(); ++rank) {
        while (ranks_[rank].next < table_[rank].size() && step(rank)) moved = true;
      }
    }
    out.finished = problem_.empty();
    for (int rank = 0; rank < shape_.stages; ++rank) {
      const SimRank& r = ranks_[rank];
      out.makespan = std::max(out.makespan, r.clock);
      out.peak_in_flight.push_back(r.peak);
      if (r.next < table_[rank].size()) {
        out.finished = false;
        if (problem_.empty()) problem_ = "deadlock:";
        if (problem_.rfind("deadlock", 0) == 0) problem_ += " " + on_rank(rank, table_[rank][r.next]) + " waits;";
      }
    }
    const std::size_t vstages = static_cast<std::size_t>(shape_.stages) * shape_.chunks;
    for (std::size_t i = 0; i < mailbox_.size() && out.finished && problem_.empty(); ++i) {
      if (mailbox_[i].empty()) continue;
      const std::size_t to = (i / shape_.microbatches) % vstages;
      problem_ = std::string(i / shape_.microbatches >= vstages ? "a gradient" : "an activation") +
                 " for virtual stage " + std::to_string(to) + " microbatch " + std::to_string(i % shape_.microbatches) +
                 " was sent and never received";
    }
    out.problem = problem_;
    if (out.makespan > 0) out.bubble = 1 - busy_ / (shape_.stages * out.makespan);
    return out;
  }

 private:
  std::vector<double>& box(bool gradient, int to_stage, int mb) {
    const std::size_t vstages = static_cast<std::size_t>(shape_.stages) * shape_.chunks;
    return mailbox_[((gradient ? vstages : 0) + to_stage) * shape_.microbatches + mb];
  }

  // Runs rank's next action if it can; false when it must wait or something is wrong.
  bool step(int rank) {
    SimRank& r = ranks_[rank];
    const PipeAction& a = table_[rank][r.next];
    unsigned char& done = r.done[static_cast<std::size_t>(a.microbatch) * shape_.chunks + a.chunk];
    const int k = virtual_stage(shape_, rank, a.chunk), last = shape_.stages * shape_.chunks - 1;
    auto fail = [&](const std::string& why) {
      problem_ = on_rank(rank, a) + ": " + why;
      return false;
    };
    switch (a.op) {
      case PipeOp::RecvActivation:
      case PipeOp::RecvGradient: {
        const bool gradient = a.op == PipeOp::RecvGradient;
        if (gradient ? k == last : k == 0) return fail("no stage sends to it");
        auto& b = box(gradient, k, a.microbatch);
        if (b.empty()) return false;
        r.clock = std::max(r.clock, b.front());
        b.erase(b.begin());
        done |= gradient ? kGotGradient : kGotActivation;
        break;
      }
      case PipeOp::SendActivation:
      case PipeOp::SendGradient: {
        const bool gradient = a.op == PipeOp::SendGradient;
        if (gradient ? k == 0 : k == last) return fail("no stage receives it");
        if (!(done & (gradient ? kBackwarded : kForwarded))) return fail("sends what it has not computed yet");
        box(gradient, gradient ? k - 1 : k + 1, a.microbatch).push_back(r.clock);
        break;
      }
      case PipeOp::Forward:
        if (done & kForwarded) return fail("runs twice");
        if (k > 0 && !(done & kGotActivation)) return fail("runs before its activation was received");
        r.clock += forward_;
        busy_ += forward_;
        done |= kForwarded;
        r.peak = std::max(r.peak, ++r.in_flight);
        break;
      case PipeOp::Backward:
        if (done & kBackwarded) return fail("runs twice");
        if (!(done & kForwarded)) return fail("runs before its forward");
        if (k < last && !(done & kGotGradient)) return fail("runs before its gradient was received");
        r.clock += backward_;
        busy_ += backward_;
        done |= kBackwarded;
        --r.in_flight;
        break;
    }
    ++r.next;
    return true;
  }

  const std::vector<std::vector<PipeAction>>& table_;
  const PipelineShape& shape_;
  const double forward_, backward_;
  std::vector<SimRank> ranks_;
  std::vector<std::vector<double>> mailbox_;
  double busy_ = 0;
  std::string problem_;
};

}  // namespace

Simulation simulate(const std::vector<std::vector<PipeAction>>& table, const PipelineShape& shape, double forward,
                    double backward) {
  if (std::string problem = shape_problem(table, shape); !problem.empty()) {
    Simulation out;
    out.problem = problem;
    return out;
  }
  return Simulator(table, shape, forward, backward).run();
}

double peak_held(const std::vector<PipeAction>& actions, const std::vector<double>& chunk_bytes) {
  double held = 0, peak = 0;
  for (const PipeAction& a : actions) {
    const double w = chunk_bytes.at(static_cast<std::size_t>(a.chunk));
    if (a.op == PipeOp::Forward) peak = std::max(peak, held += w);
    if (a.op == PipeOp::Backward) held -= w;
  }
  return peak;
}

double theoretical_bubble(ScheduleKind kind, const PipelineShape& shape) {
  const double p = shape.stages, m = shape.microbatches;
  const double v = kind == ScheduleKind::Interleaved ? shape.chunks : 1;
  return (p - 1) / (v * m + p - 1);
}

std::vector<std::int64_t> balanced_split(const std::vector<double>& costs, int parts) {
  const int n = static_cast<int>(costs.size());
  if (parts < 1) throw ConfigError("parallel.pipeline_stages must be at least 1 (got " + std::to_string(parts) + ")");
  if (parts > n)
    throw ConfigError("parallel.pipeline_stages = " + std::to_string(parts) + " is more stages than the model's " +
                      std::to_string(n) + " blocks; set parallel.pipeline_stages <= " + std::to_string(n));
  std::vector<double> prefix(n + 1, 0.0);
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(costs[i]) || costs[i] < 0)
      throw std::invalid_argument("block " + std::to_string(i) + " has cost " + std::to_string(costs[i]) +
                                  "; block costs must be finite and >= 0");
    prefix[i + 1] = prefix[i] + costs[i];
  }
  // Range sums as prefix differences everywhere, so the search and the walk below compare
  // the same rounded numbers (a difference of non-decreasing prefixes is monotone).
  auto cost = [&](int from, int to) { return prefix[to] - prefix[from]; };
  // best[i]: smallest largest-group cost of the first i blocks in g groups, for g = 1.. parts.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(n + 1, inf), next(n + 1, inf);
  for (int i = 1; i <= n; ++i) best[i] = cost(0, i);
  for (int g = 2; g <= parts; ++g) {
    std::fill(next.begin(), next.end(), inf);
    for (int i = g; i <= n; ++i)
      for (int k = g - 1; k < i; ++k) next[i] = std::min(next[i], std::max(best[k], cost(k, i)));
    best.swap(next);
  }
  const double bound = best[n];
  // Walk from the back: each group takes as many blocks as fit under the bound while leaving
  // one block for each group before it. The prefix left over always fits the groups left.
  std::vector<std::int64_t> starts(parts, 0);
  int end = n;
  for (int g = parts - 1; g >= 1; --g) {
    int start = end - 1;
    while (start - 1 >= g && cost(start - 1, end) <= bound) --start;
    starts[g] = start;
    end = start;
  }
  return starts;
}

std::vector<std::int64_t> explicit_split(const std::vector<std::int64_t>& list, std::int64_t blocks, int parts) {
  const std::string key = "parallel.stage_split";
  if (parts < 1) throw ConfigError("parallel.pipeline_stages must be at least 1 (got " + std::to_string(parts) + ")");
  if (parts > blocks)
    throw ConfigError(key + ": parallel.pipeline_stages = " + std::to_string(parts) +
                      " is more stages than the model's " + std::to_string(blocks) + " blocks");
  if (static_cast<std::int64_t>(list.size()) != parts - 1)
    throw ConfigError(key + " lists " + std::to_string(list.size()) + " block indices; parallel.pipeline_stages = " +
                      std::to_string(parts) + " needs " + std::to_string(parts - 1) +
                      " (the first block of each stage after the first), or set it to \"auto\"");
  std::vector<std::int64_t> starts{0};
  for (std::int64_t first : list) {
    if (first <= starts.back() || first >= blocks)
      throw ConfigError(key + " must increase strictly within 1.." + std::to_string(blocks - 1) + " (the model has " +
                        std::to_string(blocks) + " blocks, every stage at least one); got " + std::to_string(first) +
                        " after " + std::to_string(starts.back()));
    starts.push_back(first);
  }
  return starts;
}

}  // namespace hpctrain
