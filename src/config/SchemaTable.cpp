// The schema table: one declaration per config key (docs/config.md is generated from it),
// in sections; the order here is the order of docs/config.md.
#include "config/SchemaKeys.hpp"
#include "config/SchemaSections.hpp"

namespace hpctrain {
using namespace schema_keys;

// data
std::vector<SchemaEntry> data_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
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
  };
}

// model
std::vector<SchemaEntry> model_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
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
      {key("model.fused_kernels", K::Boolean, "true", none, none, {},
           "CPU: fused operators (float32, bfloat16; within float rounding) for a CNN stage's batch norm, ReLU and "
           "2x2 max pool, a ResNet's batch norm (+ residual add) and ReLU; counter-based dropout, also in attention "
           "and between LSTM layers (other masks than LibTorch's); docs/models.md. GPU: CUDA kernels for a "
           "Transformer block's residual add + LayerNorm and the cross-entropy, cuBLASLt epilogues for its MLP with "
           "model.gelu=tanh (docs/gpu.md). false: LibTorch's."),
       bind(&Config::model, &ModelConfig::fused_kernels)},
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
      {key("model.causal", K::Boolean, "false", none, none, {},
           "Transformer: causal self-attention (each token attends to itself and the tokens before it, as in a "
           "GPT-style decoder) and the last token's state, which has seen the whole sequence, feeds the head "
           "instead of the mean over tokens."),
       bind(&Config::model, &ModelConfig::causal)},
      {key("model.gelu", K::String, "\"erf\"", none, none, {"erf", "tanh"},
           "Transformer: the GELU of each block's MLP, exact (erf) or the tanh approximation of GPT-2 (tanh). With "
           "tanh and model.fused_kernels on a GPU the MLP's matrix products apply its bias, the GELU and their "
           "gradients in cuBLASLt epilogues (docs/gpu.md)."),
       bind(&Config::model, &ModelConfig::gelu)},
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
  };
}

// optimizer, schedule, train
std::vector<SchemaEntry> training_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
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
           "LibTorch's per-parameter loop (about ten operations each); auto: fused (on CPUs and GPUs alike: on CPUs "
           "ATen's fused kernel made the default CNN's AdamW step 2.7x faster). Same state, so checkpoints move "
           "between the two."),
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
      {free(key("train.nonfinite", K::String, "\"abort\"", none, none, {"abort", "skip"},
                "A step whose loss or gradients hold NaN or Inf (fp32 and bf16; fp16 skips such steps through its "
                "loss scaler). Every rank takes the same decision. abort: the run ends with an error naming the step, "
                "before the step is applied. skip: the optimizer step is not taken on any rank, the step counts as "
                "skipped (metrics.jsonl, report.json) and its samples are left out of the epoch's loss.")),
       bind(&Config::train, &TrainConfig::nonfinite)},
      {free(key("train.nonfinite_limit", K::Integer, "10", 0.0, none, {},
                "train.nonfinite=skip: the run ends with an error when more steps than this have been skipped in "
                "total (counted across resumes).")),
       bind(&Config::train, &TrainConfig::nonfinite_limit)},
  };
}

// train: when training stops before its epochs (early stopping, a target)
std::vector<SchemaEntry> stopping_entries() {
  using K = KeyType;
  const std::optional<double> none;
  return {
      {key("train.early_stop_metric", K::String, "\"val_loss\"", none, none, {"val_loss", "val_accuracy"},
           "Validation metric watched by early stopping."),
       bind(&Config::train, &TrainConfig::early_stop_metric)},
      {key("train.early_stop_patience", K::Integer, "0", 0.0, 100000.0, {},
           "Stop after this many epochs without improvement of the metric (0: off)."),
       bind(&Config::train, &TrainConfig::early_stop_patience)},
      {key("train.early_stop_min_delta", K::Number, "0.0", 0.0, 1e9, {},
           "Smallest change of the metric that counts as an improvement."),
       bind(&Config::train, &TrainConfig::early_stop_min_delta)},
      {extends(key("train.early_stop_restore_best", K::Boolean, "true", none, none, {},
                   "When early stopping ends the run, restore the weights of the epoch with the best "
                   "train.early_stop_metric before the final test (false: test the last epoch's weights).")),
       bind(&Config::train, &TrainConfig::early_stop_restore_best)},
      {extends(key("train.target", K::String, "\"\"", none, none, {},
                   "Stop when a metric evaluated after an epoch reaches a value: \"SPLIT_METRIC>=VALUE\" (or <=, >, "
                   "<), SPLIT val or test (test needs train.test_every_epoch), METRIC of the task's catalog, e.g. "
                   "\"val_accuracy>=0.93\", \"test_rmse<=40\". report.json's time_to_target records the step, epoch "
                   "and time (empty: no target).")),
       bind(&Config::train, &TrainConfig::target)},
  };
}

const std::vector<SchemaEntry>& schema_entries() {
  static const std::vector<SchemaEntry> table = [] {
    std::vector<SchemaEntry> all;
    for (auto part : {data_entries, model_entries, training_entries, stopping_entries, runtime_entries,
                      parallel_entries, experiment_entries, output_entries}) {
      auto entries = part();
      all.insert(all.end(), std::make_move_iterator(entries.begin()), std::make_move_iterator(entries.end()));
    }
    return all;
  }();
  return table;
}

}  // namespace hpctrain
