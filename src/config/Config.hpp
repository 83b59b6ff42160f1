#pragma once
// Plain configuration structs, filled from JSON by the schema (config/Schema.cpp).
// No module reads JSON on its own: each receives the struct it needs.
#include <cstdint>
#include <string>
#include <vector>

namespace hpctrain {

struct DataConfig {
  std::string path;                       // HDF5 file written by `hpctrain import`
  double val_fraction = 0.1;              // share of train carved out for validation
  bool verify_hashes = true;              // verify SHA-256 of each dataset before training
  bool normalize = true;                  // per-channel mean/std from the training split
  bool augment_flip = false;              // random horizontal flip
  std::int64_t augment_crop_padding = 0;  // random crop after zero padding (0: off)
  std::int64_t limit_train = 0;           // use only the first N training samples (0: all)
  bool normalize_targets = true;          // regression: train on standardized targets
};

struct ModelConfig {
  std::string name = "cnn";
  std::vector<std::int64_t> hidden{256, 128};  // MLP hidden widths
  std::vector<std::int64_t> channels{32, 64};  // CNN conv channels per stage
  std::int64_t fc_width = 128;
  double dropout = 0.0;
  bool batch_norm = true;
  bool channels_last = false;
  bool fused_kernels = true;  // hpctrain's fused CPU operators where a model has them
  // ResNet
  std::vector<std::int64_t> blocks{2, 2, 2, 2};  // residual blocks per stage
  std::string block = "basic";                   // basic | bottleneck
  std::int64_t width = 64;                       // channels of the first stage
  std::string stem = "cifar";                    // cifar | imagenet
  std::string norm = "batch";                    // ResNet and Transformer: batch | layer | none
  // Transformer encoder
  std::int64_t embed_dim = 192;
  std::int64_t heads = 3;
  std::int64_t layers = 6;
  double mlp_ratio = 4.0;
  bool causal = false;       // Transformer: causal attention, the last token to the head
  std::string gelu = "erf";  // Transformer MLP: erf | tanh
  std::int64_t patch_size = 4;
  std::int64_t hidden_size = 64;  // LSTM family: units per direction; forecaster: width
  std::int64_t rnn_layers = 2;
  std::int64_t kernel_size = 3;  // CNN-BiLSTM: 1-D convolution width
  // Gradient checkpointing of residual / transformer blocks
  std::int64_t checkpoint_every = 0;  // every n-th block (0: none)
  std::vector<std::int64_t> checkpoint_blocks;
};

struct OptimizerConfig {
  std::string name = "adamw";
  double lr = 1e-3;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::string fused = "auto";  // auto | on | off: ATen's fused multi-tensor Adam/AdamW kernel
};

struct ScheduleConfig {
  std::string name = "constant";  // constant | step | cosine | onecycle
  std::int64_t warmup_steps = 0;
  double warmup_start_factor = 0.0;
  std::int64_t step_epochs = 1;
  double step_gamma = 0.1;
  double min_lr_factor = 0.0;
  double onecycle_pct_start = 0.3;
  double onecycle_div_factor = 25.0;
  double onecycle_final_div_factor = 1e4;
};

struct TrainConfig {
  std::int64_t epochs = 2;
  std::int64_t batch_size = 128;  // global batch: split across ranks
  std::int64_t eval_batch_size = 256;
  std::int64_t seed = 42;
  std::int64_t max_steps = 0;  // stop after this many steps in total (0: no limit)
  double grad_clip_norm = 0.0;
  std::string early_stop_metric = "val_loss";  // val_loss | val_accuracy
  std::int64_t early_stop_patience = 0;        // epochs without improvement (0: off)
  double early_stop_min_delta = 0.0;
  bool early_stop_restore_best = true;  // an early stop restores the best epoch's weights before the test
  std::string target;                   // "METRIC>=VALUE" (or <=, >, <): stop once reached ("": none)
  bool test_at_end = true;
  bool test_every_epoch = false;
  std::string loss = "auto";  // auto | cross_entropy | mse | mae | huber | quantile
  double huber_delta = 1.0;
  std::vector<std::int64_t> quantiles{10, 50, 90};  // quantile loss: levels in percent
  std::string nonfinite = "abort";                  // abort | skip: a step with a NaN/Inf loss or gradient
  std::int64_t nonfinite_limit = 10;                // skip: more skipped steps than this end the run
};

struct CommConfig {
  double bucket_mb = 25.0;
  bool overlap = true;
  std::string backend = "auto";       // auto | mpi | nccl
  double nccl_timeout = 600.0;        // seconds before a stuck NCCL operation aborts the job
  std::string hierarchical = "auto";  // auto | on | off: node-aware MPI reduction
  double timeout = 0.0;               // seconds a rank may wait for the others in a step (0: off)
};

struct DeviceConfig {
  std::string type = "auto";  // auto | cpu | cuda
  bool cudnn_benchmark = false;
  bool cuda_graphs = false;        // each training step captured once and replayed as a CUDA graph
  std::string attention = "auto";  // auto | flash | efficient | cudnn | math
};

struct PrecisionConfig {
  std::string mode = "fp32";    // fp32 | bf16 | fp16 (autocast for the forward pass)
  std::string params = "fp32";  // fp32 | low: GEMM weights held in mode's type, fp32 masters stepped
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
};

// Model parallelism: pipeline stages on a grid of ranks with data-parallel replicas
// (docs/parallelism.md).
struct ParallelConfig {
  std::int64_t pipeline_stages = 1;
  std::int64_t microbatches = 1;
  std::string schedule = "1f1b";              // gpipe | 1f1b | interleaved
  std::int64_t chunks = 2;                    // model chunks per rank (interleaved)
  std::vector<std::int64_t> stage_split;      // first block of each stage after the first; empty: balanced
  std::string grid_order = "replicas_inner";  // replicas_inner | stages_inner
  std::string p2p = "auto";                   // auto | nccl | mpi: how pipeline activations travel
  std::string shard = "none";                 // none | optimizer | gradients (ZeRO stages 0-2)
};

struct CvConfig {
  std::int64_t folds = 0;  // 0: no cross-validation
  bool stratified = true;
  std::string scheme = "auto";  // auto | kfold | time
  std::int64_t repeats = 1;
  std::int64_t seed = 0;
  std::int64_t ranks_per_group = 1;
  bool final_retrain = false;
  bool save_predictions = true;
};

struct SearchConfig {
  std::string method = "none";    // none | grid | random | halving | asha | tpe
  std::string space_json = "{}";  // key path -> values (docs/cv-and-search.md); validated by the search
  std::int64_t trials = 8;        // random: trials drawn; halving: initial trials when the space is not a grid
  std::int64_t seed = 0;
  std::string metric = "auto";   // ranked metric (auto: accuracy or rmse)
  std::string scoring = "auto";  // auto | cv | holdout
  std::int64_t halving_eta = 2;
  std::int64_t halving_min_epochs = 1;
  std::int64_t tpe_startup = 10;     // tpe: random proposals until this many trials finished
  double tpe_gamma = 0.1;            // tpe: fraction of the finished trials that are "good" (at most 25)
  std::int64_t tpe_candidates = 24;  // tpe: draws from the good trials' estimator compared per proposal
  bool tpe_multivariate = true;      // tpe: one joint estimator over all dimensions, not one per dimension
  std::int64_t shards = 1;           // job-array split: this job runs trials with index % shards == shard
  std::int64_t shard = 0;
};

struct CheckpointConfig {
  std::int64_t every_steps = 0;  // 0: off
  double every_minutes = 0.0;    // 0: off
  bool at_end = true;
  std::int64_t keep = 3;
  std::string keep_best = "none";  // none | val_METRIC: RUN_DIR/checkpoints/best.h5 at each best epoch
  std::string resume = "none";     // none | auto | a checkpoint file
  std::string dir;                 // "": RUN_DIR/checkpoints
  bool parallel_write = true;      // parallel.shard: every rank writes its slices (format version 2)
};

struct RunConfig {
  std::string dir;                  // empty: LaunchEnvironment::default_run_dir
  std::int64_t log_every = 50;      // steps between metrics.jsonl step lines
  std::string progress = "auto";    // auto | bar | lines | none
  std::int64_t threads = 0;         // intra-op threads per rank (0: from the affinity mask)
  std::int64_t profile_steps = 0;   // Kineto trace of this many steps (0: none)
  std::int64_t profile_start = 10;  // ... from this step of the run on
  double monitor_seconds = 10.0;    // system monitor's sampling interval (0: off)
};

struct Config {
  DataConfig data;
  ModelConfig model;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainConfig train;
  CommConfig comm;
  DeviceConfig device;
  PrecisionConfig precision;
  ParallelConfig parallel;
  CvConfig cv;
  SearchConfig search;
  CheckpointConfig checkpoint;
  RunConfig run;
};

}  // namespace hpctrain
