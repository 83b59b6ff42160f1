// The schema table's sections for where and how a run computes (comm, device, precision,
// parallel), its experiments (cv, search) and its outputs (checkpoint, run).
#include "config/MetricCatalog.hpp"
#include "config/SchemaKeys.hpp"
#include "config/SchemaSections.hpp"

namespace hpctrain {
using namespace schema_keys;
namespace {

// search.metric: auto or any metric of the catalog.
std::vector<std::string> search_metric_choices() {
  std::vector<std::string> out{"auto"};
  for (const auto& m : metric_catalog()) out.push_back(m.name);
  return out;
}

std::string lower_is_better_metrics() {
  std::vector<std::string> names;
  for (const auto& m : metric_catalog()) {
    if (m.lower_is_better) names.push_back(m.name);
  }
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  }
  return out;
}

}  // namespace

// comm, device, precision
std::vector<SchemaEntry> runtime_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
      // comm
      {free(key(
           "comm.bucket_mb", K::Number, "25.0", 0.001, 4096.0, {},
           "Size of the fused gradient buckets reduced with one allreduce each (MiB). Smaller buckets start reducing "
           "earlier in backward; larger ones cost fewer calls.")),
       bind(&Config::comm, &CommConfig::bucket_mb)},
      {free(key("comm.overlap", K::Boolean, "true", none, none, {},
                "Reduce each gradient bucket on a communication thread as soon as backward has produced all of its "
                "gradients, overlapping communication with the rest of backward. false: reduce all buckets after "
                "backward.")),
       bind(&Config::comm, &CommConfig::overlap)},
      {free(key("comm.backend", K::String, "\"auto\"", none, none, {"auto", "mpi", "nccl"},
                "Gradient reduction: MPI (CPU tensors; GPU tensors staged through pinned host memory) or NCCL (GPU "
                "tensors, on its own CUDA stream). auto: NCCL on GPUs when compiled in, else MPI. One rank reduces "
                "nothing, except with nccl named and no pipeline stages: its one-rank communicator then runs the "
                "many-rank path.")),
       bind(&Config::comm, &CommConfig::backend)},
      {free(key("comm.nccl_timeout", K::Number, "600.0", 1.0, 86400.0, {},
                "Seconds an NCCL init or reduction may take before the communicator is aborted and the job ends with a "
                "message (a dead or stuck peer) instead of hanging.")),
       bind(&Config::comm, &CommConfig::nccl_timeout)},
      {free(key("comm.hierarchical", K::String, "\"auto\"", none, none, {"auto", "on", "off"},
                "MPI gradient reduction by topology: within each node over shared memory, then among the nodes, then "
                "back within the node (docs/cluster.md). auto: on when the ranks span several nodes and some node "
                "holds more than one of them (on the two-node test cluster 1.4-2.0x the flat ring at 1 Gbit/s, "
                "docs/benchmarks.md); off: one flat sum over all ranks. Not used with NCCL.")),
       bind(&Config::comm, &CommConfig::hierarchical)},
      {free(key("comm.timeout", K::Number, "0.0", 0.0, 86400.0, {},
                "Seconds a rank may make no progress during training (no step point reached, no evaluation batch) "
                "before the job is ended with a message naming the rank(s) the others wait for, instead of hanging on "
                "a stopped or stuck rank (0: off). Must exceed the longest step with its checkpoint and the epoch's "
                "row exchange. Watched from the first training step on (docs/reliability.md).")),
       bind(&Config::comm, &CommConfig::timeout)},
      // device
      {free(
           key("device.type", K::String, "\"auto\"", none, none, {"auto", "cpu", "cuda"},
               "Where each rank computes. auto: the GPU at the rank's local rank modulo the visible GPUs when there is "
               "one, else the CPU (with a notice); cuda: a GPU or an error.")),
       bind(&Config::device, &DeviceConfig::type)},
      {free(key("device.cudnn_benchmark", K::Boolean, "false", none, none, {},
                "Let cuDNN time its convolution algorithms on the first batches and keep the fastest (GPU only; "
                "results may then differ in the last bits between runs).")),
       bind(&Config::device, &DeviceConfig::cudnn_benchmark)},
      {free(key("device.cuda_graphs", K::Boolean, "false", none, none, {},
                "Capture the training step (forward, backward, loss scaling, clipping, optimizer) once as a CUDA graph "
                "and replay it with one launch per step. GPU only (ignored with a notice on the CPU); needs Adam or "
                "AdamW with optimizer.fused auto or on and model.checkpoint_every 0; with several ranks, NCCL's "
                "reduction (captured in the step; one GPU per rank) and parallel.shard none.")),
       bind(&Config::device, &DeviceConfig::cuda_graphs)},
      {free(key("device.attention", K::String, "\"auto\"", none, none, {"auto", "flash", "efficient", "cudnn", "math"},
                "The attention kernel of the Transformer and the Forecaster (LibTorch's scaled_dot_product_attention): "
                "auto, LibTorch's choice per call; or only flash (FlashAttention-2), efficient (memory-efficient), "
                "cudnn (cuDNN's; efficient and cudnn on GPUs only) or math. A kernel that does not take the inputs "
                "is an error naming this key. The one used is report.json's training.attention_backend.")),
       bind(&Config::device, &DeviceConfig::attention)},
      // precision
      {free(
           key("precision.mode", K::String, "\"fp32\"", none, none, {"fp32", "bf16", "fp16"},
               "Arithmetic of the forward pass: fp32, or autocast to bf16 or fp16 (matrix products and convolutions in "
               "the low precision, reductions in fp32). Weights, gradients and the optimizer stay fp32 (see "
               "precision.params). fp16 uses "
               "dynamic loss scaling (precision.*_scale, growth_*, backoff_*); bf16 needs none. Both run on GPUs and "
               "CPUs (on CPUs bf16 is fast where the CPU has bf16 instructions; fp16 there is for testing).")),
       bind(&Config::precision, &PrecisionConfig::mode)},
      {free(key("precision.params", K::String, "\"fp32\"", none, none, {"fp32", "low"},
                "Where the weights of linear and convolution layers live. fp32: as fp32 parameters that autocast "
                "casts to precision.mode's type in every forward. low: as parameters of precision.mode's type (bf16 "
                "or fp16), with fp32 master copies that the gradient reduction, clipping and the optimizer use; "
                "gradients are accumulated and reduced in fp32 and each step rounds the masters into the weights. "
                "The arithmetic is that of fp32, without the casts per step. Checkpoints hold the masters. Biases, "
                "normalization scales and embeddings stay fp32. Needs precision.mode bf16 or fp16; not with "
                "parallel.shard=parameters.")),
       bind(&Config::precision, &PrecisionConfig::params)},
      {free(key("precision.init_scale", K::Number, "65536.0", 1.0, 1e30, {}, "fp16: the first loss scale.")),
       bind(&Config::precision, &PrecisionConfig::init_scale)},
      {free(key("precision.growth_factor", K::Number, "2.0", 1.0, 1000.0, {},
                "fp16: the loss scale is multiplied by this after precision.growth_interval steps without inf/NaN "
                "gradients.")),
       bind(&Config::precision, &PrecisionConfig::growth_factor)},
      {free(key("precision.backoff_factor", K::Number, "0.5", 1e-6, 1.0, {},
                "fp16: the loss scale is multiplied by this when a step's gradients hold inf or NaN (that step is "
                "skipped).")),
       bind(&Config::precision, &PrecisionConfig::backoff_factor)},
      {free(key("precision.growth_interval", K::Integer, "2000", 1.0, 1e9, {},
                "fp16: steps without inf/NaN gradients before the loss scale grows.")),
       bind(&Config::precision, &PrecisionConfig::growth_interval)},
  };
}

// parallel
std::vector<SchemaEntry> parallel_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
      {free(key("parallel.pipeline_stages", K::Integer, "1", 1.0, 1024.0, {},
                "Pipeline stages p: each stage holds consecutive blocks of the model (the stem on the first, the "
                "head and loss on the last) and the ranks form a grid of p stages x (ranks / p) data-parallel "
                "replicas (cv.ranks_per_group for experiments). Must divide the ranks. The model must have at "
                "least p blocks (p x parallel.chunks with the interleaved schedule).")),
       bind(&Config::parallel, &ParallelConfig::pipeline_stages)},
      {free(key("parallel.microbatches", K::Integer, "1", 1.0, 65536.0, {},
                "Microbatches m per step: each replica's share of train.batch_size is split into m equal parts "
                "whose gradients accumulate before one optimizer step (with one stage: gradient accumulation). "
                "Must divide the per-replica batch.")),
       bind(&Config::parallel, &ParallelConfig::microbatches)},
      {free(key("parallel.schedule", K::String, "\"1f1b\"", none, none, {"gpipe", "1f1b", "interleaved"},
                "Pipeline schedule. gpipe: all forwards, then all backwards (activations of m microbatches held). "
                "1f1b: one forward, one backward in the steady state (at most p microbatches held on the first "
                "stage). interleaved: 1f1b over parallel.chunks model chunks per rank, a smaller bubble "
                "(p-1)/(chunks*m+p-1) for more messages; m must be a multiple of p.")),
       bind(&Config::parallel, &ParallelConfig::schedule)},
      {free(key("parallel.chunks", K::Integer, "2", 1.0, 64.0, {},
                "Model chunks per rank for parallel.schedule=interleaved (at least 2); the other schedules use "
                "one.")),
       bind(&Config::parallel, &ParallelConfig::chunks)},
      {free(key("parallel.stage_split", K::IntegerList, "[]", 1.0, 1000000.0, {},
                "Where the stages start: the first block (counted from 0) of every stage after the first, "
                "ascending (p - 1 entries; p x chunks - 1 with the interleaved schedule). []: balanced by each "
                "block's measured forward + backward time.")),
       bind(&Config::parallel, &ParallelConfig::stage_split)},
      {free(key("parallel.grid_order", K::String, "\"replicas_inner\"", none, none, {"replicas_inner", "stages_inner"},
                "How ranks fill the grid. replicas_inner: the replicas of a stage are consecutive ranks (they "
                "share a node and its fast gradient reductions; stages span nodes, which only pass activations). "
                "stages_inner: a replica's stages are consecutive ranks.")),
       bind(&Config::parallel, &ParallelConfig::grid_order)},
      {free(key("parallel.p2p", K::String, "\"auto\"", none, none, {"auto", "nccl", "mpi"},
                "How activations and their gradients travel between pipeline stages. nccl: NCCL send/recv "
                "between the GPUs, grouped per schedule step. mpi: MPI, GPU tensors staged through host "
                "memory. auto: nccl on GPUs with NCCL compiled in (not with two ranks on one GPU), else mpi.")),
       bind(&Config::parallel, &ParallelConfig::p2p)},
      {free(key("parallel.shard", K::String, "\"none\"", none, none, {"none", "optimizer", "gradients", "parameters"},
                "Sharded data parallelism (ZeRO) over the data-parallel replicas (of each pipeline stage). "
                "none: every replica holds all optimizer state and gradients. optimizer (stage 1): each replica "
                "keeps and updates the optimizer state of 1/replicas of the parameters; gradients are "
                "reduce-scattered and the updated parameters all-gathered (an allreduce's volume). gradients "
                "(stage 2): also only that share of the reduced gradients is kept between steps. parameters "
                "(stage 3): also only that share of the parameters; a block's parameters are all-gathered "
                "before its forward and its backward and freed after (models built of blocks). With one "
                "replica it changes nothing (reported as inactive). Checkpoints hold the whole state, so any "
                "layout resumes them (docs/parallelism.md).")),
       bind(&Config::parallel, &ParallelConfig::shard)},
  };
}

// cv, search
std::vector<SchemaEntry> experiment_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
      // cv
      {key("cv.folds", K::Integer, "0", 0.0, 1000.0, {},
           "k-fold cross-validation over the training split (0: off; otherwise >= 2). The test split is never used "
           "during cross-validation."),
       bind(&Config::cv, &CvConfig::folds)},
      {key("cv.stratified", K::Boolean, "true", none, none, {},
           "Stratified folds for classification data (each class's count per fold differs by at most one between "
           "folds, as scikit-learn's StratifiedKFold). Regression data always uses plain folds."),
       bind(&Config::cv, &CvConfig::stratified)},
      {key("cv.scheme", K::String, "\"auto\"", none, none, {"auto", "kfold", "time"},
           "How the training rows are cut into folds. kfold: shuffled k-fold (stratified for classification). "
           "time: forward chaining for rows in time order: k+1 consecutive blocks, fold i holds out block i+1 and "
           "trains on the rows before it, less the last horizon + span - 1 windows of a series, whose targets "
           "reach into the held-out block (one repeat). auto: time for series windows, kfold otherwise."),
       bind(&Config::cv, &CvConfig::scheme)},
      {key("cv.repeats", K::Integer, "1", 1.0, 100.0, {},
           "Repeat the k-fold split this many times with other fold assignments (repeat r draws from cv.seed and "
           "r)."),
       bind(&Config::cv, &CvConfig::repeats)},
      {key("cv.seed", K::Integer, "0", 0.0, 9007199254740991.0, {},
           "Seed of the fold assignment. Independent of train.seed, so trials that vary train.seed share folds."),
       bind(&Config::cv, &CvConfig::seed)},
      {key("cv.ranks_per_group", K::Integer, "1", 1.0, 1048576.0, {},
           "Ranks that train one fold or trial together (data-parallel on their sub-communicator). The world size "
           "must be a multiple. Groups take the next pending fold or trial when they finish."),
       bind(&Config::cv, &CvConfig::ranks_per_group)},
      {key("cv.final_retrain", K::Boolean, "false", none, none, {},
           "After cross-validation or a search: retrain the (best) configuration on the whole training split with "
           "all ranks and evaluate once on test (RUN_DIR/final/)."),
       bind(&Config::cv, &CvConfig::final_retrain)},
      {key("cv.save_predictions", K::Boolean, "true", none, none, {},
           "Write each fold's held-out predictions (sample index, label, prediction, scores) to "
           "RUN_DIR/predictions/."),
       bind(&Config::cv, &CvConfig::save_predictions)},
      // search
      {key("search.method", K::String, "\"none\"", none, none, {"none", "grid", "random", "halving", "asha", "tpe"},
           "Hyperparameter search over search.space: every combination (grid), search.trials random draws, "
           "successive halving (growing epoch budgets; the better 1/eta of the trials go on), asynchronous "
           "successive halving (asha: a trial goes on as soon as it is among the better 1/eta of its rung's results "
           "so far), or a tree-structured Parzen estimator (tpe: search.trials trials, each proposed from the "
           "results so far when a group frees up)."),
       bind(&Config::search, &SearchConfig::method)},
      {key("search.space", K::Object, "{}", none, none, {},
           "Object from config key paths to values: a list of values ([0.1, 0.01]), or {\"uniform\": [lo, hi]}, "
           "{\"log_uniform\": [lo, hi]}, {\"int_uniform\": [lo, hi]}, {\"range\": [start, stop, step]}. A "
           "section name (e.g. \"model\") with a list of objects compares whole sections. Random and halving "
           "searches draw from every form; grid needs lists or ranges."),
       bind(&Config::search, &SearchConfig::space_json)},
      {key("search.trials", K::Integer, "8", 1.0, 100000.0, {},
           "Random search: trials drawn. Halving and asha: initial trials drawn when the space is not all lists and "
           "ranges (otherwise the whole grid starts). Tpe: trials proposed."),
       bind(&Config::search, &SearchConfig::trials)},
      {key("search.seed", K::Integer, "0", 0.0, 9007199254740991.0, {}, "Seed of random draws from search.space."),
       bind(&Config::search, &SearchConfig::seed)},
      {key("search.metric", K::String, "\"auto\"", none, none, search_metric_choices(),
           "Metric that ranks trials (mean over folds with cv scoring). auto: accuracy for classification, rmse for "
           "regression. " +
               lower_is_better_metrics() + " rank lower-is-better, the others higher-is-better."),
       bind(&Config::search, &SearchConfig::metric)},
      {key("search.scoring", K::String, "\"auto\"", none, none, {"auto", "cv", "holdout"},
           "How a trial is scored: k-fold cross-validation (cv.folds) or the validation split (data.val_fraction). "
           "auto: cv when cv.folds >= 2."),
       bind(&Config::search, &SearchConfig::scoring)},
      {key("search.halving_eta", K::Integer, "2", 2.0, 100.0, {},
           "Successive halving (and asha): keep the best 1/eta of the trials each rung and multiply their epochs by "
           "eta."),
       bind(&Config::search, &SearchConfig::halving_eta)},
      {key("search.halving_min_epochs", K::Integer, "1", 1.0, 100000.0, {},
           "Successive halving (and asha): epochs of the first rung (train.epochs caps the last)."),
       bind(&Config::search, &SearchConfig::halving_min_epochs)},
      {key("search.tpe_startup", K::Integer, "10", 1.0, 100000.0, {},
           "Tpe: proposals are the random search's draws until this many trials have finished (Optuna's "
           "n_startup_trials)."),
       bind(&Config::search, &SearchConfig::tpe_startup)},
      {key("search.tpe_gamma", K::Number, "0.1", 0.0, 1.0, {},
           "Tpe: the finished trials whose score is among the best ceil(gamma * n) (at most 25) are the good ones "
           "the proposals are drawn near (0: the best one alone)."),
       bind(&Config::search, &SearchConfig::tpe_gamma)},
      {key("search.tpe_candidates", K::Integer, "24", 1.0, 10000.0, {},
           "Tpe: draws from the good trials' estimator per proposal; the one with the highest ratio of good to "
           "bad density is proposed (Optuna's n_ei_candidates)."),
       bind(&Config::search, &SearchConfig::tpe_candidates)},
      {key("search.tpe_multivariate", K::Boolean, "true", none, none, {},
           "Tpe: one joint Parzen estimator over all of search.space (each kernel a whole past trial, so values "
           "that went well together are proposed together, such as a learning rate and the optimizer it suits; "
           "Optuna 5's default), or one estimator per key (false: the keys are drawn independently)."),
       bind(&Config::search, &SearchConfig::tpe_multivariate)},
      {free(key("search.shards", K::Integer, "1", 1.0, 100000.0, {},
                "Split the trials of a grid or random search over this many jobs (a Slurm job array): each runs the "
                "trials whose index modulo search.shards is search.shard, and `hpctrain search-merge` joins their "
                "reports.")),
       bind(&Config::search, &SearchConfig::shards)},
      {free(key("search.shard", K::Integer, "0", 0.0, 99999.0, {},
                "Which shard of the trials this job runs (0 .. search.shards-1; slurm/search-array.sbatch sets it from "
                "SLURM_ARRAY_TASK_ID).")),
       bind(&Config::search, &SearchConfig::shard)},
  };
}

// checkpoint, run
std::vector<SchemaEntry> output_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
      // checkpoint
      {free(key("checkpoint.every_steps", K::Integer, "0", 0.0, none, {},
                "Write a checkpoint every this many optimizer steps (0: off).")),
       bind(&Config::checkpoint, &CheckpointConfig::every_steps)},
      {free(key(
           "checkpoint.every_minutes", K::Number, "0.0", 0.0, 1e6, {},
           "Write a checkpoint when this many minutes have passed since the last one (rank 0's clock, agreed at the "
           "next step; 0: off).")),
       bind(&Config::checkpoint, &CheckpointConfig::every_minutes)},
      {free(key("checkpoint.at_end", K::Boolean, "true", none, none, {},
                "Write a checkpoint when training ends (before the final test).")),
       bind(&Config::checkpoint, &CheckpointConfig::at_end)},
      {free(key("checkpoint.keep", K::Integer, "3", 1.0, 1000000.0, {}, "Keep the newest this many checkpoints.")),
       bind(&Config::checkpoint, &CheckpointConfig::keep)},
      {free(key("checkpoint.keep_best", K::String, "\"none\"", none, none, {},
                "none, or a validation metric \"val_METRIC\" (METRIC of the task's catalog: val_loss, "
                "val_accuracy, val_f1_macro, val_rmse, val_r2, ...): after each epoch whose metric is the best so far, "
                "the checkpoint best.h5 in checkpoint.dir is rewritten (atomically, like the others), never pruned "
                "by checkpoint.keep; `hpctrain export RUN_DIR --best` exports it.")),
       bind(&Config::checkpoint, &CheckpointConfig::keep_best)},
      {free(key(
           "checkpoint.resume", K::String, "\"none\"", none, none, {},
           "none: start fresh. auto: resume from the newest checkpoint in checkpoint.dir that verifies (a corrupt one "
           "is reported and the one before it used; none found: start fresh). A file path: resume from that "
           "checkpoint. A resume refuses a changed config unless every changed key is free or extends on resume "
           "(docs/checkpoints.md).")),
       bind(&Config::checkpoint, &CheckpointConfig::resume)},
      {free(key("checkpoint.dir", K::String, "\"\"", none, none, {},
                "Folder of the checkpoints (empty: RUN_DIR/checkpoints).")),
       bind(&Config::checkpoint, &CheckpointConfig::dir)},
      {free(key("checkpoint.parallel_write", K::Boolean, "true", none, none, {},
                "With parallel.shard and several replicas, every rank writes its slices of the parameters and "
                "optimizer state into the checkpoint at once (format version 2). false: the first rank gathers and "
                "writes the whole state.")),
       bind(&Config::checkpoint, &CheckpointConfig::parallel_write)},
      // run
      {free(key(
           "run.dir", K::String, "\"\"", none, none, {},
           "Run directory: resolved config, metrics.jsonl, report.json. Empty: `runs/slurm-JOB` in a Slurm job "
           "(`runs/slurm-ARRAYJOB_TASK` in a job array), else `runs/` and the config file's name without `.json`.")),
       bind(&Config::run, &RunConfig::dir)},
      {free(key("run.log_every", K::Integer, "50", 1.0, none, {},
                "Steps between step lines in metrics.jsonl and between progress lines in batch jobs.")),
       bind(&Config::run, &RunConfig::log_every)},
      {free(
           key("run.monitor_seconds", K::Number, "10.0", 0.0, 86400.0, {},
               "Seconds between a rank's system samples (CPU utilization, resident memory; on GPUs utilization, "
               "memory and power through NVML), taken on a background thread. About as often, rank 0 writes the latest "
               "sample of every rank as a `system` line of metrics.jsonl; their summary and the monitor's cost go to "
               "report.json (`system.monitor`). 0: off.")),
       bind(&Config::run, &RunConfig::monitor_seconds)},
      {free(key("run.profile_steps", K::Integer, "0", 0.0, 10000.0, {},
                "Trace this many training steps with LibTorch's profiler (Kineto: operators on the CPU, kernels and "
                "copies on the GPU) into RUN_DIR/profile_rank<R>.json (Chrome trace format: Perfetto, "
                "chrome://tracing, analysis/profile_summary.py). 0: no trace.")),
       bind(&Config::run, &RunConfig::profile_steps)},
      {free(key("run.profile_start", K::Integer, "10", 0.0, none, {},
                "First traced step (counted over the whole run), after warm-up.")),
       bind(&Config::run, &RunConfig::profile_start)},
      {free(key("run.progress", K::String, "\"auto\"", none, none, {"auto", "bar", "lines", "none"},
                "Rank 0's progress display: a bar with ETA on a terminal, plain lines in batch jobs (auto picks).")),
       bind(&Config::run, &RunConfig::progress)},
      {free(key("run.threads", K::Integer, "0", 0.0, 1024.0, {},
                "Intra-op threads per rank (0: Slurm's CPUs per task when set, at most the rank's affinity mask; else "
                "the cores of the rank's affinity mask, shared among the ranks on the node that overlap it).")),
       bind(&Config::run, &RunConfig::threads)},
  };
}

}  // namespace hpctrain
