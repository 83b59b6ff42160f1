#pragma once
// A rank's view of an image-classification data set: its contiguous shard of train and
// test read collectively with parallel HDF5, the validation subset, normalization
// statistics, and per-epoch sample sets exchanged between ranks so that every rank count
// sees the same global batches.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "comm/Communicator.hpp"
#include "config/Config.hpp"
#include "data/DatasetLayout.hpp"
#include "data/Sampling.hpp"

namespace hpctrain {

struct LabeledImages {
  torch::Tensor images;  // uint8 [n, C, H, W]
  torch::Tensor labels;  // int64 [n]
  std::int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct DataLoadStats {
  double read_seconds = 0;      // collective shard reads
  double verify_seconds = 0;    // chained SHA-256
  double exchange_seconds = 0;  // validation exchange
  std::int64_t bytes_read = 0;  // this rank
};

class ImageData {
 public:
  // Collective over `comm`. Throws DataError on any rank for a bad file; callers wrap it in
  // collective_check so every rank fails together.
  static ImageData load(const DataConfig& config, std::uint64_t seed, const Communicator& comm);

  const DatasetMeta& meta() const { return meta_; }
  const TrainValSplit& split() const { return split_; }
  std::int64_t train_count() const { return static_cast<std::int64_t>(split_.train.size()); }
  const LabeledImages& validation() const { return validation_; }  // this rank's part
  const LabeledImages& test() const { return test_; }              // this rank's part
  const DataLoadStats& load_stats() const { return stats_; }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& stddev() const { return std_; }

  // The samples this rank trains on in `epoch`, in step order: step k is rows
  // [k * slice, (k + 1) * slice) where slice is this rank's share of the global batch.
  // `indices` receives their global indices. Collective (ranks exchange rows from their
  // shards); augmentation is left to the batch pipeline.
  LabeledImages epoch(std::int64_t epoch, std::int64_t global_batch, const Communicator& comm,
                      std::vector<std::int64_t>* indices = nullptr) const;

  // uint8 images to normalized float32 network input.
  torch::Tensor to_input(const torch::Tensor& images) const;

 private:
  // Rows wanted[r] (global train-file indices) delivered to each rank r from the shards.
  LabeledImages exchange(const std::vector<std::vector<std::int64_t>>& wanted, const Communicator& comm) const;

  DataConfig config_;
  std::uint64_t seed_ = 0;
  DatasetMeta meta_;
  TrainValSplit split_;
  Range shard_;  // this rank's rows of /train
  LabeledImages train_shard_;
  LabeledImages validation_;
  LabeledImages test_;
  std::vector<double> mean_, std_;
  torch::Tensor mean_t_, inv_std_t_;
  std::vector<std::int64_t> shard_begins_;  // every rank's first train row, and the end
  DataLoadStats stats_;
};

// Plain SHA-256 of the bytes every rank holds, taken in rank order: each rank continues
// the hash from its predecessor, so no rank reads more than its share. Returns the hex
// digest on every rank.
std::string chained_sha256(const void* data, std::size_t bytes, const Communicator& comm);

}  // namespace hpctrain
