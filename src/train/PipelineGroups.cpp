#include "train/PipelineGroups.hpp"

#include <map>
#include <utility>

namespace hpctrain {

namespace {

// A message as both sides name it: its direction, microbatch and receiving virtual stage.
struct Message {
  bool activation = true;
  int microbatch = 0;
  int receiver = 0;
  bool operator==(const Message& o) const {
    return activation == o.activation && microbatch == o.microbatch && receiver == o.receiver;
  }
};

bool is_send(PipeOp op) {
  return op == PipeOp::SendActivation || op == PipeOp::SendGradient;
}

Message message_of(const PipelineShape& shape, int stage, const PipeAction& a) {
  const int k = virtual_stage(shape, stage, a.chunk);
  switch (a.op) {
    case PipeOp::SendActivation:
      return {true, a.microbatch, k + 1};
    case PipeOp::RecvActivation:
      return {true, a.microbatch, k};
    case PipeOp::SendGradient:
      return {false, a.microbatch, k - 1};
    default:  // RecvGradient: the gradient of this stage's output
      return {false, a.microbatch, k};
  }
}

std::string describe(const Message& m) {
  return std::string(m.activation ? "activation" : "gradient") + " of microbatch " + std::to_string(m.microbatch) +
         " for virtual stage " + std::to_string(m.receiver);
}

std::string group_text(const std::vector<PipeAction>& actions, const MessageRun& run) {
  return format_actions(std::vector<PipeAction>(actions.begin() + static_cast<std::ptrdiff_t>(run.begin),
                                                actions.begin() + static_cast<std::ptrdiff_t>(run.end)));
}

}  // namespace

bool is_message(PipeOp op) {
  return op != PipeOp::Forward && op != PipeOp::Backward;
}

std::vector<MessageRun> message_runs(const std::vector<PipeAction>& actions) {
  std::vector<MessageRun> runs;
  for (std::size_t i = 0; i < actions.size();) {
    if (!is_message(actions[i].op)) {
      ++i;
      continue;
    }
    MessageRun run{i, i};
    while (run.end < actions.size() && is_message(actions[run.end].op)) ++run.end;
    runs.push_back(run);
    i = run.end;
  }
  return runs;
}

int message_peer(const PipelineShape& shape, int stage, const PipeAction& a) {
  const int p = shape.stages;
  const bool previous = a.op == PipeOp::RecvActivation || a.op == PipeOp::SendGradient;
  return previous ? (stage + p - 1) % p : (stage + 1) % p;
}

std::vector<PipeAction> forward_actions(const PipelineShape& shape, int stage) {
  const int last = shape.stages * shape.chunks - 1;
  std::vector<PipeAction> out;
  for (int mb = 0; mb < shape.microbatches; ++mb) {
    for (int c = 0; c < shape.chunks; ++c) {
      const int k = virtual_stage(shape, stage, c);
      if (k > 0) out.push_back({PipeOp::RecvActivation, mb, c});
      out.push_back({PipeOp::Forward, mb, c});
      if (k < last) out.push_back({PipeOp::SendActivation, mb, c});
    }
  }
  return out;
}

std::vector<PipeAction> nccl_order(ScheduleKind kind, const PipelineShape& shape, int stage,
                                   const std::vector<PipeAction>& actions) {
  // A rank without a steady state (all its forwards first) keeps its order, as Megatron's.
  if (kind != ScheduleKind::Interleaved || warmup_forwards(kind, shape, stage) >= shape.microbatches * shape.chunks)
    return actions;
  std::vector<PipeAction> out;
  out.reserve(actions.size());
  for (std::size_t i = 0; i < actions.size();) {
    // F(a) [SA(a)] [RG(b)] B(b)  ->  [RG(b)] F(a) B(b) [SA(a)]
    if (actions[i].op == PipeOp::Forward) {
      std::size_t j = i + 1;
      const bool send = j < actions.size() && actions[j].op == PipeOp::SendActivation;
      if (send) ++j;
      const bool recv = j < actions.size() && actions[j].op == PipeOp::RecvGradient;
      if (recv) ++j;
      if (j < actions.size() && actions[j].op == PipeOp::Backward) {
        if (recv) out.push_back(actions[j - 1]);
        out.push_back(actions[i]);
        out.push_back(actions[j]);
        if (send) out.push_back(actions[i + 1]);
        i = j + 1;
        continue;
      }
    }
    out.push_back(actions[i++]);
  }
  return out;
}

std::string check_groups(const std::vector<std::vector<PipeAction>>& table, const PipelineShape& shape) {
  const int p = static_cast<int>(table.size());
  std::vector<std::vector<MessageRun>> runs;
  for (const auto& actions : table) runs.push_back(message_runs(actions));
  // Per directed pair (from, to): the messages sent and the messages received, as issued.
  std::map<std::pair<int, int>, std::vector<Message>> sent, received;
  // Per rank: the group it has issued (index into runs), and each of its operations' place.
  std::vector<std::size_t> at(static_cast<std::size_t>(p), 0);
  std::vector<std::vector<std::pair<std::pair<int, int>, std::size_t>>> places(static_cast<std::size_t>(p));
  std::vector<std::vector<bool>> sends(static_cast<std::size_t>(p));
  auto issue = [&](int r) {
    auto& place = places[static_cast<std::size_t>(r)];
    auto& is = sends[static_cast<std::size_t>(r)];
    place.clear();
    is.clear();
    if (at[static_cast<std::size_t>(r)] >= runs[static_cast<std::size_t>(r)].size()) return;
    const MessageRun& run = runs[static_cast<std::size_t>(r)][at[static_cast<std::size_t>(r)]];
    for (std::size_t i = run.begin; i < run.end; ++i) {
      const PipeAction& a = table[static_cast<std::size_t>(r)][i];
      const int peer = message_peer(shape, r, a);
      const bool send = is_send(a.op);
      const auto key = send ? std::make_pair(r, peer) : std::make_pair(peer, r);
      auto& list = send ? sent[key] : received[key];
      place.emplace_back(key, list.size());
      is.push_back(send);
      list.push_back(message_of(shape, r, a));
    }
  };
  for (int r = 0; r < p; ++r) issue(r);
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < p; ++r) {
      const auto ur = static_cast<std::size_t>(r);
      if (at[ur] >= runs[ur].size()) continue;
      bool met = true;
      for (std::size_t i = 0; i < places[ur].size() && met; ++i) {
        const auto& [key, index] = places[ur][i];
        const auto& other = sends[ur][i] ? received[key] : sent[key];
        met = other.size() > index;
        if (met && !(sent[key][index] == received[key][index])) {
          return "rank " + std::to_string(key.first) + "'s send " + std::to_string(index) + " to rank " +
                 std::to_string(key.second) + " is the " + describe(sent[key][index]) + ", its receive " +
                 std::to_string(index) + " there waits for the " + describe(received[key][index]);
        }
      }
      if (!met) continue;
      ++at[ur];
      issue(r);
      moved = true;
    }
  }
  std::string waiting;
  for (int r = 0; r < p; ++r) {
    const auto ur = static_cast<std::size_t>(r);
    if (at[ur] < runs[ur].size())
      waiting += (waiting.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " in group [" +
                 group_text(table[ur], runs[ur][at[ur]]) + "]";
  }
  return waiting.empty() ? "" : "deadlock: " + waiting;
}

}  // namespace hpctrain
