// The schema table: one declaration per config key (docs/config.md is generated from it).
#include <functional>

#include "config/MetricCatalog.hpp"
#include "config/SchemaTable.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

template <class Section, class Field>
Binding bind(Section Config::*section, Field Section::*field) {
  Binding b;
  b.assign = [section, field](Config& c, const json::value& v) {
    Field& target = c.*section.*field;
    if constexpr (std::is_same_v<Field, bool>) {
      target = v.get_bool();
    } else if constexpr (std::is_same_v<Field, std::int64_t>) {
      target = json_as_int(v);
    } else if constexpr (std::is_same_v<Field, double>) {
      target = json_as_number(v);
    } else if constexpr (std::is_same_v<Field, std::string>) {
      target = v.is_object() ? compact_json(v) : std::string(v.get_string());
    } else {
      target.clear();
      for (const auto& e : v.get_array()) target.push_back(json_as_int(e));
    }
  };
  b.extract = [section, field](const Config& c) -> json::value {
    const Field& value = c.*section.*field;
    if constexpr (std::is_same_v<Field, std::vector<std::int64_t>>) {
      json::array out;
      for (auto x : value) out.push_back(x);
      return out;
    } else {
      return json::value(value);
    }
  };
  return b;
}

KeySpec key(std::string path, KeyType type, std::string def, std::optional<double> min, std::optional<double> max,
            std::vector<std::string> choices, std::string doc) {
  return KeySpec{std::move(path), type, std::move(def), min, max, std::move(choices), std::move(doc), OnResume::Fixed};
}

// Where, how fast or how verbosely the steps run, or what is logged: a resumed run or a
// requeued experiment may change it (results may then differ in the last bits).
KeySpec free(KeySpec k) {
  k.on_resume = OnResume::Free;
  return k;
}

// How far training goes: a resumed run may extend it, but it is part of what a finished
// cross-validation or search task computed.
KeySpec extends(KeySpec k) {
  k.on_resume = OnResume::Extends;
  return k;
}

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

const std::vector<SchemaEntry>& schema_entries() {
  using K = KeyType;
  const std::optional<double> none;
  static const std::vector<SchemaEntry> table = {
      // data
      {key("data.path", K::String, "", none, none, {}, "HDF5 data set written by `hpctrain import` (required)."),
       bind(&Config::data, &DataConfig::path)},
      {key("data.val_fraction", K::Number, "0.1", 0.0, 0.5, {},
           "Share of the training split held out for validation, chosen by a fixed permutation of the seed."),
       bind(&Config::data, &DataConfig::val_fraction)},
      {free(key(
           "data.verify_hashes", K::Boolean, "true", none, none, {},
           "Verify the SHA-256 of each dataset before training (ranks hash their shards in turn). Turn off for very "
           "large files.")),
       bind(&Config::data, &DataConfig::verify_hashes)},
      {key("data.normalize", K::Boolean, "true", none, none, {},
           "Normalize inputs by per-channel mean and standard deviation of the training split, computed in parallel."),
       bind(&Config::data, &DataConfig::normalize)},
      {key("data.augment_flip", K::Boolean, "false", none, none, {},
           "Random horizontal flip of training images (p = 0.5)."),
       bind(&Config::data, &DataConfig::augment_flip)},
      {key("data.augment_crop_padding", K::Integer, "0", 0.0, 16.0, {},
           "Random crop of training images after zero padding by this many pixels (0: off)."),
       bind(&Config::data, &DataConfig::augment_crop_padding)},
      {key("data.limit_train", K::Integer, "0", 0.0, none, {},
           "Use only the first N samples of the training split (0: all). For quick experiments and tests."),
       bind(&Config::data, &DataConfig::limit_train)},
      {key("data.normalize_targets", K::Boolean, "true", none, none, {},
           "Regression: train on targets standardized by the training rows' mean and standard deviation; "
           "predictions and metrics are reported in the original units."),
       bind(&Config::data, &DataConfig::normalize_targets)},
      // model
      {key("model.name", K::String, "\"cnn\"", none, none,
           {"mlp", "cnn", "resnet", "transformer", "lstm", "bilstm", "cnn_bilstm", "forecaster"},
           "Architecture from the model registry (docs/models.md)."),
       bind(&Config::model, &ModelConfig::name)},
      {key("model.hidden", K::IntegerList, "[256, 128]", 1.0, 65536.0, {}, "MLP: widths of the hidden layers."),
       bind(&Config::model, &ModelConfig::hidden)},
      {key("model.channels", K::IntegerList, "[32, 64]", 1.0, 4096.0, {},
           "CNN: output channels of each convolution stage (3x3 convolution, optional batch norm, ReLU, 2x2 max "
           "pooling)."),
       bind(&Config::model, &ModelConfig::channels)},
      {key("model.fc_width", K::Integer, "128", 1.0, 65536.0, {},
           "CNN: width of the fully connected layer before the classifier."),
       bind(&Config::model, &ModelConfig::fc_width)},
      {key("model.dropout", K::Number, "0.0", 0.0, 0.95, {},
           "Dropout probability before the classifier (MLP: after each hidden layer)."),
       bind(&Config::model, &ModelConfig::dropout)},
      {key("model.batch_norm", K::Boolean, "true", none, none, {},
           "MLP and CNN: normalize after each hidden layer (MLP) or convolution (CNN), with the kind model.norm "
           "names; false: no normalization."),
       bind(&Config::model, &ModelConfig::batch_norm)},
      {key("model.channels_last", K::Boolean, "false", none, none, {},
           "Keep 4-D weights and inputs in channels-last (NHWC) memory format for LibTorch's convolutions. Results "
           "agree with the default layout within floating-point rounding; for the default CNN on CPU it measured "
           "within noise of the default (docs/benchmarks.md)."),
       bind(&Config::model, &ModelConfig::channels_last)},
      {key("model.blocks", K::IntegerList, "[2, 2, 2, 2]", 1.0, 1000.0, {},
           "ResNet: residual blocks in each stage; each stage after the first halves the resolution and doubles the "
           "channels ([2,2,2,2] with basic blocks is ResNet-18, [3,4,6,3] with bottlenecks ResNet-50)."),
       bind(&Config::model, &ModelConfig::blocks)},
      {key("model.block", K::String, "\"basic\"", none, none, {"basic", "bottleneck"},
           "ResNet: two 3x3 convolutions (basic) or 1x1-3x3-1x1 with 4x expansion (bottleneck)."),
       bind(&Config::model, &ModelConfig::block)},
      {key("model.width", K::Integer, "64", 1.0, 8192.0, {},
           "ResNet: channels of the first stage (a wide ResNet raises it)."),
       bind(&Config::model, &ModelConfig::width)},
      {key("model.stem", K::String, "\"cifar\"", none, none, {"cifar", "imagenet"},
           "ResNet: a 3x3 convolution at full resolution (cifar, for small images) or a 7x7 stride-2 convolution and "
           "3x3 max pooling (imagenet)."),
       bind(&Config::model, &ModelConfig::stem)},
      {key("model.norm", K::String, "\"batch\"", none, none, {"batch", "sync_batch", "layer", "none"},
           "Normalization after each convolution (ResNet, CNN-BiLSTM, and CNN with model.batch_norm) or hidden "
           "layer (MLP with model.batch_norm): batch norm with statistics per rank (batch), batch norm with the "
           "statistics of the global batch summed over the data-parallel group in every training step "
           "(sync_batch), layer norm (over the features; over channels and positions for convolutions, as group "
           "norm with one group), or none. The Transformer and the forecaster always use layer norm."),
       bind(&Config::model, &ModelConfig::norm)},
      {key("model.embed_dim", K::Integer, "192", 8.0, 65536.0, {}, "Transformer: width of the token embeddings."),
       bind(&Config::model, &ModelConfig::embed_dim)},
      {key("model.heads", K::Integer, "3", 1.0, 1024.0, {},
           "Transformer: attention heads (model.embed_dim must be a multiple)."),
       bind(&Config::model, &ModelConfig::heads)},
      {key("model.layers", K::Integer, "6", 1.0, 1000.0, {}, "Transformer: encoder blocks."),
       bind(&Config::model, &ModelConfig::layers)},
      {key("model.mlp_ratio", K::Number, "4.0", 0.25, 64.0, {},
           "Transformer: width of each block's MLP as a multiple of model.embed_dim."),
       bind(&Config::model, &ModelConfig::mlp_ratio)},
      {key("model.patch_size", K::Integer, "4", 1.0, 1024.0, {},
           "Transformer on images: side of the square patches that become tokens (must divide height and width)."),
       bind(&Config::model, &ModelConfig::patch_size)},
      {key("model.hidden_size", K::Integer, "64", 1.0, 65536.0, {},
           "LSTM, BiLSTM, CNN-BiLSTM: hidden units per direction; forecaster: width of its layers (a multiple "
           "of model.heads)."),
       bind(&Config::model, &ModelConfig::hidden_size)},
      {key("model.rnn_layers", K::Integer, "2", 1.0, 64.0, {},
           "LSTM, BiLSTM, CNN-BiLSTM and forecaster: stacked LSTM layers (model.dropout between them)."),
       bind(&Config::model, &ModelConfig::rnn_layers)},
      {key("model.kernel_size", K::Integer, "3", 1.0, 255.0, {},
           "CNN-BiLSTM: width of the 1-D convolutions over time (odd keeps the length; model.channels gives "
           "their channels)."),
       bind(&Config::model, &ModelConfig::kernel_size)},
      {key("model.checkpoint_every", K::Integer, "0", 0.0, 1000000.0, {},
           "Gradient checkpointing: keep only every n-th block's input during forward and recompute the block in "
           "backward (1: every block; 0: none). Less activation memory for about one more forward pass. Blocks: "
           "MLP hidden layers, CNN convolution stages, ResNet residual blocks, Transformer encoder blocks, the "
           "LSTM stack (LSTM, BiLSTM), CNN-BiLSTM convolutions then the BiLSTM, forecaster variable selection, "
           "LSTM encoder, attention and output network (docs/models.md)."),
       bind(&Config::model, &ModelConfig::checkpoint_every)},
      {key("model.checkpoint_blocks", K::IntegerList, "[]", 0.0, 1000000.0, {},
           "Gradient checkpointing: these block indices (from 0) as well."),
       bind(&Config::model, &ModelConfig::checkpoint_blocks)},
      // optimizer
      {key("optimizer.name", K::String, "\"adamw\"", none, none, {"sgd", "adam", "adamw"}, "Optimizer."),
       bind(&Config::optimizer, &OptimizerConfig::name)},
      {key("optimizer.lr", K::Number, "0.001", 0.0, 100.0, {}, "Peak learning rate (the schedule scales it)."),
       bind(&Config::optimizer, &OptimizerConfig::lr)},
      {key("optimizer.momentum", K::Number, "0.9", 0.0, 1.0, {}, "SGD momentum."),
       bind(&Config::optimizer, &OptimizerConfig::momentum)},
      {key("optimizer.nesterov", K::Boolean, "false", none, none, {}, "SGD: Nesterov momentum."),
       bind(&Config::optimizer, &OptimizerConfig::nesterov)},
      {key("optimizer.weight_decay", K::Number, "0.0", 0.0, 1.0, {},
           "Weight decay (L2 for SGD and Adam, decoupled for AdamW)."),
       bind(&Config::optimizer, &OptimizerConfig::weight_decay)},
      {key("optimizer.beta1", K::Number, "0.9", 0.0, 0.999999, {}, "Adam/AdamW beta1."),
       bind(&Config::optimizer, &OptimizerConfig::beta1)},
      {key("optimizer.beta2", K::Number, "0.999", 0.0, 0.999999, {}, "Adam/AdamW beta2."),
       bind(&Config::optimizer, &OptimizerConfig::beta2)},
      {key("optimizer.eps", K::Number, "1e-8", 0.0, 1.0, {}, "Adam/AdamW epsilon."),
       bind(&Config::optimizer, &OptimizerConfig::eps)},
      {key("optimizer.fused", K::String, "\"auto\"", none, none, {"auto", "on", "off"},
           "Adam/AdamW through ATen's fused multi-tensor kernel (one launch for all parameters) instead of "
           "LibTorch's per-parameter loop (about ten launches each); auto: fused on a GPU. Same state, so "
           "checkpoints move between the two."),
       bind(&Config::optimizer, &OptimizerConfig::fused)},
      // schedule
      {key("schedule.name", K::String, "\"constant\"", none, none, {"constant", "step", "cosine", "onecycle"},
           "Learning-rate schedule over optimizer steps."),
       bind(&Config::schedule, &ScheduleConfig::name)},
      {key("schedule.warmup_steps", K::Integer, "0", 0.0, none, {},
           "Linear warmup steps (constant, step and cosine schedules)."),
       bind(&Config::schedule, &ScheduleConfig::warmup_steps)},
      {key("schedule.warmup_start_factor", K::Number, "0.0", 0.0, 1.0, {},
           "Learning rate at the start of warmup, as a fraction of optimizer.lr."),
       bind(&Config::schedule, &ScheduleConfig::warmup_start_factor)},
      {key("schedule.step_epochs", K::Integer, "1", 1.0, none, {},
           "Step schedule: multiply the learning rate by step_gamma every this many epochs."),
       bind(&Config::schedule, &ScheduleConfig::step_epochs)},
      {key("schedule.step_gamma", K::Number, "0.1", 0.0, 1.0, {}, "Step schedule: decay factor."),
       bind(&Config::schedule, &ScheduleConfig::step_gamma)},
      {key("schedule.min_lr_factor", K::Number, "0.0", 0.0, 1.0, {},
           "Cosine schedule: final learning rate as a fraction of optimizer.lr."),
       bind(&Config::schedule, &ScheduleConfig::min_lr_factor)},
      {key("schedule.onecycle_pct_start", K::Number, "0.3", 0.0, 1.0, {},
           "One-cycle: share of steps spent increasing the learning rate."),
       bind(&Config::schedule, &ScheduleConfig::onecycle_pct_start)},
      {key("schedule.onecycle_div_factor", K::Number, "25.0", 1.0, 1e6, {},
           "One-cycle: initial learning rate is optimizer.lr / div_factor."),
       bind(&Config::schedule, &ScheduleConfig::onecycle_div_factor)},
      {key("schedule.onecycle_final_div_factor", K::Number, "10000.0", 1.0, 1e9, {},
           "One-cycle: final learning rate is the initial one / final_div_factor."),
       bind(&Config::schedule, &ScheduleConfig::onecycle_final_div_factor)},
      // train
      {extends(key("train.epochs", K::Integer, "2", 1.0, 100000.0, {}, "Epochs over the training split.")),
       bind(&Config::train, &TrainConfig::epochs)},
      {key("train.batch_size", K::Integer, "128", 1.0, 1048576.0, {},
           "Global batch size, split across ranks (the first ranks take one more sample when it does not divide). The "
           "sequence of global batches is the same for any rank count."),
       bind(&Config::train, &TrainConfig::batch_size)},
      {free(key("train.eval_batch_size", K::Integer, "256", 1.0, 1048576.0, {},
                "Per-rank batch size for validation, test and held-out evaluation. Larger is not faster on CPUs: the "
                "default CNN evaluated 2.3x slower at 1000 than at 256 per thread (docs/benchmarks.md).")),
       bind(&Config::train, &TrainConfig::eval_batch_size)},
      {key("train.seed", K::Integer, "42", 0.0, 9007199254740991.0, {},
           "Seed of the initial parameters, the validation split, the per-epoch global permutation, dropout and "
           "augmentation."),
       bind(&Config::train, &TrainConfig::seed)},
      {extends(key("train.max_steps", K::Integer, "0", 0.0, none, {},
                   "Stop after this many optimizer steps in total (0: run all epochs).")),
       bind(&Config::train, &TrainConfig::max_steps)},
      {key("train.grad_clip_norm", K::Number, "0.0", 0.0, 1e9, {},
           "Clip the global gradient norm to this value after averaging (0: off)."),
       bind(&Config::train, &TrainConfig::grad_clip_norm)},
      {key("train.early_stop_metric", K::String, "\"val_loss\"", none, none, {"val_loss", "val_accuracy"},
           "Validation metric watched by early stopping."),
       bind(&Config::train, &TrainConfig::early_stop_metric)},
      {key("train.early_stop_patience", K::Integer, "0", 0.0, 100000.0, {},
           "Stop after this many epochs without improvement of the metric (0: off)."),
       bind(&Config::train, &TrainConfig::early_stop_patience)},
      {key("train.early_stop_min_delta", K::Number, "0.0", 0.0, 1e9, {},
           "Smallest change of the metric that counts as an improvement."),
       bind(&Config::train, &TrainConfig::early_stop_min_delta)},
      {extends(key("train.test_at_end", K::Boolean, "true", none, none, {},
                   "Evaluate on the test split after the last epoch.")),
       bind(&Config::train, &TrainConfig::test_at_end)},
      {extends(key("train.test_every_epoch", K::Boolean, "false", none, none, {},
                   "Also evaluate on the test split after every epoch (for time-to-accuracy measurements).")),
       bind(&Config::train, &TrainConfig::test_every_epoch)},
      {key("train.loss", K::String, "\"auto\"", none, none,
           {"auto", "cross_entropy", "mse", "mae", "huber", "quantile"},
           "Training loss. auto: cross_entropy for classification data, mse for regression data. quantile: the "
           "model predicts one value per level of train.quantiles, trained with the pinball loss averaged over "
           "the levels; the level nearest the median is the point prediction that MSE, RMSE, MAE and R² score."),
       bind(&Config::train, &TrainConfig::loss)},
      {key("train.huber_delta", K::Number, "1.0", 1e-9, 1e9, {},
           "Huber loss: quadratic below this absolute error (in standardized target units), linear above."),
       bind(&Config::train, &TrainConfig::huber_delta)},
      {key("train.quantiles", K::IntegerList, "[10, 50, 90]", 1.0, 99.0, {},
           "Quantile loss: the quantile levels the model predicts, in percent, ascending and distinct "
           "([10, 50, 90]: an 80% prediction interval around the median)."),
       bind(&Config::train, &TrainConfig::quantiles)},
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
                "tensors, on its own CUDA stream). auto: NCCL on GPUs when compiled in, else MPI.")),
       bind(&Config::comm, &CommConfig::backend)},
      {free(key("comm.nccl_timeout", K::Number, "600.0", 1.0, 86400.0, {},
                "Seconds an NCCL init or reduction may take before the communicator is aborted and the job ends with a "
                "message (a dead or stuck peer) instead of hanging.")),
       bind(&Config::comm, &CommConfig::nccl_timeout)},
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
                "and replay it with one launch per step. GPU only (ignored with a notice on the CPU); needs one rank "
                "per run, Adam or AdamW with optimizer.fused auto or on, and model.checkpoint_every 0.")),
       bind(&Config::device, &DeviceConfig::cuda_graphs)},
      // precision
      {free(
           key("precision.mode", K::String, "\"fp32\"", none, none, {"fp32", "bf16", "fp16"},
               "Arithmetic of the forward pass: fp32, or autocast to bf16 or fp16 (matrix products and convolutions in "
               "the low precision, reductions in fp32). Weights, gradients and the optimizer stay fp32. fp16 uses "
               "dynamic loss scaling (precision.*_scale, growth_*, backoff_*); bf16 needs none. Both run on GPUs and "
               "CPUs (on CPUs bf16 is fast where the CPU has bf16 instructions; fp16 there is for testing).")),
       bind(&Config::precision, &PrecisionConfig::mode)},
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
      {key("search.method", K::String, "\"none\"", none, none, {"none", "grid", "random", "halving"},
           "Hyperparameter search over search.space: every combination (grid), search.trials random draws, or "
           "successive halving (growing epoch budgets; the better 1/eta of the trials go on)."),
       bind(&Config::search, &SearchConfig::method)},
      {key("search.space", K::Object, "{}", none, none, {},
           "Object from config key paths to values: a list of values ([0.1, 0.01]), or {\"uniform\": [lo, hi]}, "
           "{\"log_uniform\": [lo, hi]}, {\"int_uniform\": [lo, hi]}, {\"range\": [start, stop, step]}. A "
           "section name (e.g. \"model\") with a list of objects compares whole sections. Random and halving "
           "searches draw from every form; grid needs lists or ranges."),
       bind(&Config::search, &SearchConfig::space_json)},
      {key("search.trials", K::Integer, "8", 1.0, 100000.0, {},
           "Random search: trials drawn. Halving: initial trials drawn when the space is not all lists and ranges "
           "(otherwise the whole grid starts)."),
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
           "Successive halving: keep the best 1/eta of the trials each rung and multiply their epochs by eta."),
       bind(&Config::search, &SearchConfig::halving_eta)},
      {key("search.halving_min_epochs", K::Integer, "1", 1.0, 100000.0, {},
           "Successive halving: epochs of the first rung (train.epochs caps the last)."),
       bind(&Config::search, &SearchConfig::halving_min_epochs)},
      {free(key("search.shards", K::Integer, "1", 1.0, 100000.0, {},
                "Split the trials of a grid or random search over this many jobs (a Slurm job array): each runs the "
                "trials whose index modulo search.shards is search.shard, and `hpctrain search-merge` joins their "
                "reports.")),
       bind(&Config::search, &SearchConfig::shards)},
      {free(key("search.shard", K::Integer, "0", 0.0, 99999.0, {},
                "Which shard of the trials this job runs (0 .. search.shards-1; slurm/search-array.sbatch sets it from "
                "SLURM_ARRAY_TASK_ID).")),
       bind(&Config::search, &SearchConfig::shard)},
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
      // run
      {free(key(
           "run.dir", K::String, "\"\"", none, none, {},
           "Run directory: resolved config, metrics.jsonl, report.json. Empty: `runs/slurm-JOB` in a Slurm job "
           "(`runs/slurm-ARRAYJOB_TASK` in a job array), else `runs/` and the config file's name without `.json`.")),
       bind(&Config::run, &RunConfig::dir)},
      {free(key("run.log_every", K::Integer, "50", 1.0, none, {},
                "Steps between step lines in metrics.jsonl and between progress lines in batch jobs.")),
       bind(&Config::run, &RunConfig::log_every)},
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
  return table;
}

}  // namespace hpctrain
