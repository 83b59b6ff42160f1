#pragma once
// Pipeline parallelism: one rank's part of a model split into stages, and the small
// interpreter that runs its schedule (train/PipelineSchedule) for one optimizer step.
//
// The model is a chain of pieces (models/Model.hpp: stem, blocks, head). A stage plan cuts
// the blocks into p x v consecutive virtual stages; rank s of the pipeline runs virtual
// stages s, s + p, ... (its chunks). Every rank builds the whole model from the seed, so the
// initial parameters equal a single rank's, then drops the pieces it does not run.
//
// Activations and their gradients travel point to point on the grid's pipeline axis, by
// one of two links (parallel.p2p). MPI: non-blocking, receives posted ahead of the action
// that needs them (two per direction), sends completing in the background and waited for at
// the end of the step; GPU tensors are staged through host memory. NCCL (GPUs): each run of
// consecutive messages in the rank's list is one ncclSend/ncclRecv group between the GPUs,
// queued after the compute that produced its tensors, the compute that consumes them
// ordered after it on the device; the list is issued in train/PipelineGroups' nccl_order,
// whose groups are checked to pair without tags and never deadlock. Shapes and dtypes at
// every stage boundary are agreed once, at construction, by running each chunk on two
// samples of zeros; a message is then just its bytes.
//
// Gradient accumulation: the caller's GradientReducer is held for the step and each chunk's
// parameters are released just before that chunk's last backward, so the data-parallel
// reduction of a stage's gradients starts inside its last backward, overlapped as without a
// pipeline.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/ProcessGrid.hpp"
#include "train/PipelineSchedule.hpp"

namespace hpctrain {

struct ModelImpl;
class GradientReducer;
class NcclCommunicator;
class Request;

// How activations travel between stages (parallel.p2p resolved): MPI unless `nccl`.
struct PipelineLink {
  bool nccl = false;
  double timeout_seconds = 600;  // comm.nccl_timeout
};

// Where the virtual stages start: pieces [begin(k), end(k)) of the model run on virtual
// stage k (the stem with the first, the head with the last).
struct StagePlan {
  ScheduleKind kind = ScheduleKind::OneFOneB;
  PipelineShape shape;
  std::int64_t blocks = 0;
  std::vector<std::int64_t> first_block;  // per virtual stage, first block (from 0); [0] == 0

  int virtual_stages() const { return shape.stages * shape.chunks; }
  std::int64_t piece_begin(int k) const { return k == 0 ? 0 : first_block[static_cast<std::size_t>(k)] + 1; }
  std::int64_t piece_end(int k) const {
    return k + 1 == virtual_stages() ? blocks + 2 : first_block[static_cast<std::size_t>(k) + 1] + 1;
  }
  // "blocks 0-3 | 4-7" (with the stem and head named on the first and last).
  std::string describe() const;
};

// Time of this rank's pipeline steps, accumulated (seconds).
struct PipelineTimes {
  double forward = 0;   // forward pieces (and the loss on the last stage)
  double backward = 0;  // backward pieces
  double wait = 0;      // waiting for activations, gradients, and own sends at the step's end
  double steps = 0;     // whole steps: what is neither compute nor wait is the interpreter
  std::int64_t count = 0;
  // The same steps seen from the replica's whole pipeline: each step's common window runs
  // from the first stage's pass start to the last stage's pass end (clocks referred to a
  // barrier), settled every kSettleSteps steps. The theory's bubble is the idle share of the
  // stages over that window; `skew` is the part that is ranks entering the step apart.
  double window = 0;       // sum over settled steps: latest pass end - earliest pass start
  double skew = 0;         // sum over settled steps: latest pass start - earliest pass start
  double window_busy = 0;  // this rank's forward + backward over the settled steps
  std::int64_t window_steps = 0;
};

// What this rank's forwards left allocated for their backwards (bytes): the allocator's bytes
// in use after a forward (and the loss, on the last stage) less before it, plus the received
// input it keeps for its gradient; held until that (microbatch, chunk)'s backward. The
// allocator is the CUDA caching allocator's allocated bytes on a GPU, the C heap on the CPU
// (heap_in_use), so the figure counts the saved tensors, the output and the loss, and
// anything another thread allocates meanwhile (nothing of the reducer's while it is held).
// The first step's forwards also allocate what LibTorch and MPI set up once, so from the
// second step on the figures are over the steps after the first.
struct PipelineMemory {
  std::int64_t activation_peak = 0;   // most bytes held at once, over the steps (but the first)
  int in_flight_peak = 0;             // most (microbatch, chunk) pairs held at once
  std::int64_t microbatch_bytes = 0;  // the last step's largest single (microbatch, chunk)
};

class PipelineEngine {
 public:
  // Loss sum of a microbatch from its fp32 outputs and targets (the last stage only).
  using LossFn = std::function<torch::Tensor(const torch::Tensor& outputs, const torch::Tensor& targets)>;
  // What backward starts from, given a microbatch's loss sum (the sum / global batch, times
  // the fp16 loss scale).
  using ToBackward = std::function<torch::Tensor(const torch::Tensor& loss_sum)>;

  // Collective over grid.pipeline(): agrees on the activation shapes. `sample_shape` is one
  // input sample's; `precision` the autocast mode.
  PipelineEngine(ModelImpl& model, const ProcessGrid& grid, StagePlan plan, torch::Device device,
                 std::vector<std::int64_t> sample_shape, std::string precision, bool channels_last,
                 PipelineLink link = {});
  ~PipelineEngine();
  PipelineEngine(const PipelineEngine&) = delete;
  PipelineEngine& operator=(const PipelineEngine&) = delete;

  // The parameters of this rank's chunks, in the model's order (what it optimizes and reduces).
  const std::vector<torch::Tensor>& parameters() const { return owned_; }
  // Replaces the parameters each chunk's backward releases to the reducer by what the reducer
  // knows them as (precision.params=low: their fp32 masters).
  void map_released(const std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>& map) {
    for (auto& chunk : chunk_params_) chunk = map(chunk);
  }
  // Frees the parameters and buffers of the pieces this rank does not run.
  void drop_other_pieces();
  bool runs_piece(std::int64_t piece) const;
  bool last_stage() const;

  struct StepOutput {
    torch::Tensor outputs;   // last stage: the batch's fp32 outputs [n, ...] (detached); else undefined
    torch::Tensor loss_sum;  // last stage: the batch's summed loss (fp32, unscaled); else undefined
  };
  // One step's forwards and backwards over this replica's batch, split into the plan's
  // microbatches; gradients accumulate into the parameters' .grad. Backward starts from
  // to_backward(each microbatch's loss sum). Every stage of a replica passes the same batch
  // (the first reads the inputs, the last the targets).
  StepOutput train_step(const torch::Tensor& input, const torch::Tensor& targets, const LossFn& loss,
                        const ToBackward& to_backward, GradientReducer* reducer);
  // Forward only (evaluation, prediction), no gradients: the last stage's fp32 outputs, undefined elsewhere.
  torch::Tensor forward(const torch::Tensor& input);

  const StagePlan& plan() const { return plan_; }
  const PipelineTimes& times() const { return times_; }
  const PipelineMemory& memory() const { return memory_; }
  const std::vector<PipeAction>& actions() const { return actions_; }
  bool nccl() const { return nccl_ != nullptr; }

 private:
  struct Boundary {  // what virtual stage k receives: one sample's shape and the dtype
    std::vector<std::int64_t> shape;
    torch::ScalarType dtype = torch::kFloat;
  };
  struct Micro;    // one (microbatch, chunk)'s tensors during a step
  struct Transit;  // messages in flight
  void agree_shapes();
  torch::Tensor run_chunk(int chunk, torch::Tensor x);
  std::int64_t bytes_in_use() const;  // the allocator PipelineMemory reads
  void run_forward(const PipeAction& a, Micro& mc, const torch::Tensor& input, const torch::Tensor& targets,
                   std::int64_t rows, const LossFn& loss_fn, std::vector<torch::Tensor>& outputs,
                   torch::Tensor& loss_total);
  void run_backward(const PipeAction& a, Micro& mc, const ToBackward& to_backward, GradientReducer* reducer);
  void exchange_nccl(std::size_t begin, std::size_t end, std::vector<Micro>& micro, std::int64_t rows);
  int virtual_of(int chunk) const { return chunk * plan_.shape.stages + grid_.stage(); }
  int tag(int direction, int receiver_virtual, int microbatch) const;
  // On the host for MPI, on the device for NCCL.
  torch::Tensor receive_buffer(int receiver_virtual, std::int64_t rows) const;
  // Records a pass [start, end) with `busy` compute seconds; every kSettleSteps passes agrees
  // the common windows over the pipeline (collective) and refers the clock to a new barrier.
  void record_window(double start, double end, double busy);

  ModelImpl& model_;
  const ProcessGrid& grid_;
  StagePlan plan_;
  torch::Device device_;
  std::vector<std::int64_t> sample_shape_;
  std::string precision_;
  bool channels_last_;
  std::vector<PipeAction> actions_;
  std::unique_ptr<NcclCommunicator> nccl_;  // the NCCL link, or null (MPI)
  std::vector<PipeAction> nccl_actions_;    // actions_ in the order NCCL issues them
  std::vector<Boundary> inbound_;           // per virtual stage
  std::vector<torch::Tensor> owned_;
  std::vector<std::vector<torch::Tensor>> chunk_params_;
  PipelineTimes times_;
  PipelineMemory memory_;
  std::int64_t held_ = 0;  // bytes held now (during a step)
  int held_pairs_ = 0;
  double clock_zero_ = 0;            // wall_seconds() at the last barrier of the pipeline
  std::vector<double> pass_bounds_;  // unsettled passes: start, end (from clock_zero_)
  double unsettled_busy_ = 0;
};

// Forward + backward seconds of each of the model's blocks on `rows` samples of zeros of
// `sample` shape (the stem's and the head's added to the first and last block), the fastest
// of three rounds, in evaluation mode (no batch-norm statistics or dropout draws change, so
// a run's results do not depend on it): the costs parallel.stage_split = [] balances.
std::vector<double> measure_block_costs(ModelImpl& model, const std::vector<std::int64_t>& sample, std::int64_t rows,
                                        const torch::Device& device, const std::string& precision);

// The plan for `model` on `stages` x `chunks` virtual stages: parallel.stage_split when
// given, else balanced by `block_costs` (one per block). Throws ConfigError naming the key.
StagePlan make_stage_plan(ScheduleKind kind, const PipelineShape& shape, std::int64_t blocks,
                          const std::vector<std::int64_t>& explicit_split, const std::vector<double>& block_costs);

}  // namespace hpctrain
