#pragma once
// Pipeline messages over NCCL: how a rank's action list (train/PipelineSchedule.hpp) becomes
// NCCL point-to-point groups, and the check that the groups can neither deadlock nor cross.
//
// NCCL has no tags and its operations run in the order they were issued, on one stream: a
// send from rank A to rank B meets the receive from A that B issued at the same position of
// its own order, and an operation occupies the stream until its peer has posted the matching
// one. So the MPI executor's freedoms (receives posted ahead, sends that never block, tags
// that match messages in any order) are gone. The executor issues each maximal run of
// consecutive Recv and Send actions as one group (ncclGroupStart/End), in list order: the
// operations of a group progress together, so a send and a receive that two ranks issue in
// the same group each do not wait for one another (Megatron's send_forward_recv_backward).
//
// check_groups simulates exactly that: each rank issues its groups in order, a group ends
// when each of its operations has met its peer's, and the k-th send from A to B must be the
// message (direction, microbatch, receiving virtual stage) of B's k-th receive from A.
#include <cstddef>
#include <string>
#include <vector>

#include "train/PipelineSchedule.hpp"

namespace hpctrain {

bool is_message(PipeOp op);  // a Recv or a Send

// The maximal runs [begin, end) of consecutive messages of one rank's list, in order.
struct MessageRun {
  std::size_t begin = 0, end = 0;
};
std::vector<MessageRun> message_runs(const std::vector<PipeAction>& actions);

// The peer rank of a message action of rank `stage`: the previous stage for a received
// activation or a sent gradient, the next for the others (wrapping around between chunks).
int message_peer(const PipelineShape& shape, int stage, const PipeAction& a);

// The order the NCCL executor issues a rank's list in: the list itself, but for interleaved,
// where each steady-state forward's activation is sent after the backward that follows it
// and that backward's gradient is received before the forward, so the messages of a
// forward-backward pair go out in one group (Megatron's send_forward_backward_recv_
// forward_backward); a rank whose forwards all come first keeps its list. Without it
// interleaved lists deadlock or cross over NCCL.
std::vector<PipeAction> nccl_order(ScheduleKind kind, const PipelineShape& shape, int stage,
                                   const std::vector<PipeAction>& actions);

// Forward only (evaluation, prediction): each microbatch through each chunk in turn, a
// Recv before and a Send after each forward where the neighbouring virtual stage exists.
std::vector<PipeAction> forward_actions(const PipelineShape& shape, int stage);

// "" when the table, issued as message_runs groups, finishes with every message meeting its
// own receive; else the first problem (a crossing, or the ranks and groups left waiting).
std::string check_groups(const std::vector<std::vector<PipeAction>>& table, const PipelineShape& shape);

}  // namespace hpctrain
