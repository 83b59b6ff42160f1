#pragma once
// A rank's view of a data set (image or tabular, classification or regression): its
// contiguous shard of train and test read collectively with parallel HDF5, the split of
// train into training and held-out rows (validation, or a cross-validation fold),
// normalization statistics of the training rows, and per-epoch sample sets exchanged
// between ranks so that every rank count sees the same global batches.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "comm/Communicator.hpp"
#include "config/Config.hpp"
#include "data/Sampling.hpp"
#include "io/DatasetLayout.hpp"

namespace hpctrain {

struct Samples {
  torch::Tensor inputs;   // uint8 [n, C, H, W] (images) or float32 [n, F] (features)
  torch::Tensor targets;  // int64 [n] class labels, or float32 [n] or [n, S] regression targets
  std::int64_t size() const { return targets.defined() ? targets.size(0) : 0; }
};

struct DataLoadStats {
  double read_seconds = 0;      // collective shard reads
  double verify_seconds = 0;    // chained SHA-256
  double exchange_seconds = 0;  // held-out exchange
  std::int64_t bytes_read = 0;  // this rank
};

class ShardedDataset {
 public:
  // Collective over `comm`: reads and verifies the shards, then applies the default split
  // (data.val_fraction of train held out for validation). Throws CollectiveError on every
  // rank for a bad file.
  static ShardedDataset load(const DataConfig& config, std::uint64_t seed, const Communicator& comm);
  // The same without a split: call use_split before training.
  static ShardedDataset load_shards(const DataConfig& config, std::uint64_t seed, const Communicator& comm);

  // Collective: trains on split.train, holds out split.validation (both sorted indices
  // into /train). Recomputes normalization statistics from the training rows only, so a
  // held-out fold never leaks into them. `options` supplies the normalization and
  // augmentation settings (a search may vary them); the file settings stay those of load.
  // `seed` orders the epochs (train.seed of the configuration trained next).
  void use_split(TrainValSplit split, const DataConfig& options, std::uint64_t seed, const Communicator& comm);

  const DatasetMeta& meta() const { return meta_; }
  bool classification() const { return meta_.task == Task::Classification; }
  // Network outputs: classes, or 1 for regression.
  // Classes, or regression target values per sample (S for targets [N, S]).
  std::int64_t output_size() const { return classification() ? meta_.num_classes : meta_.target_width; }
  std::int64_t available_train() const { return n_train_; }  // rows of /train in use
  const TrainValSplit& split() const { return split_; }
  std::int64_t train_count() const { return static_cast<std::int64_t>(split_.train.size()); }
  const Samples& validation() const { return validation_; }  // this rank's part of the held-out rows
  const Samples& test() const { return test_; }              // this rank's part
  const DataLoadStats& load_stats() const { return stats_; }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& stddev() const { return std_; }
  // Regression targets are trained standardized: (y - target_mean) / target_std.
  double target_mean() const { return target_mean_; }
  double target_std() const { return target_std_; }

  // Class label of every row of /train in use, on every rank (collective).
  std::vector<std::int32_t> all_train_labels(const Communicator& comm) const;

  // The samples this rank trains on in `epoch`, in step order: step k is rows
  // [k * slice, (k + 1) * slice) where slice is this rank's share of the global batch.
  // `indices` receives their global indices. Collective (ranks exchange rows from their
  // shards); augmentation is left to the batch pipeline.
  Samples epoch(std::int64_t epoch, std::int64_t global_batch, const Communicator& comm,
                std::vector<std::int64_t>* indices = nullptr) const;

  // Stored inputs to normalized float32 network input (always a new tensor).
  torch::Tensor to_input(const torch::Tensor& inputs) const;
  // Stored targets to what the loss sees: class labels as they are, regression targets
  // standardized.
  torch::Tensor to_target(const torch::Tensor& targets) const;

 private:
  // Rows wanted[r] (global train-file indices) delivered to each rank r from the shards.
  Samples exchange(const std::vector<std::vector<std::int64_t>>& wanted, const Communicator& comm) const;

  DataConfig config_;
  std::uint64_t seed_ = 0;
  DatasetMeta meta_;
  std::int64_t n_train_ = 0;
  TrainValSplit split_;
  Range shard_;  // this rank's rows of /train
  Samples train_shard_;
  Samples validation_;
  Samples test_;
  std::vector<double> mean_, std_;
  double target_mean_ = 0, target_std_ = 1;
  torch::Tensor mean_t_, inv_std_t_;
  std::vector<std::int64_t> shard_begins_;  // every rank's first train row, and the end
  DataLoadStats stats_;
};

// Plain SHA-256 of the bytes every rank holds, taken in rank order: each rank continues
// the hash from its predecessor, so no rank reads more than its share. Returns the hex
// digest on every rank.
std::string chained_sha256(const void* data, std::size_t bytes, const Communicator& comm);

}  // namespace hpctrain
