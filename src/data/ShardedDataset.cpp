#include "data/ShardedDataset.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "launch/Mpi.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace {

// Rows of one split as stored: inputs, and targets in their file type (int32 labels or
// float32 targets) for hashing and checks.
struct StoredRows {
  Samples samples;
  torch::Tensor file_targets;
};

StoredRows read_split(const H5File& file, const DatasetMeta& meta, const std::string& split, Range rows,
                      std::int64_t& bytes_read) {
  std::vector<std::int64_t> shape{rows.size()};
  shape.insert(shape.end(), meta.sample_shape.begin(), meta.sample_shape.end());
  StoredRows out;
  const bool float_inputs = meta.float_inputs();
  out.samples.inputs = torch::empty(shape, float_inputs ? torch::kFloat : torch::kUInt8);
  read_rows(file, meta.inputs_path(split), rows.begin, rows.size(), float_inputs ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8,
            out.samples.inputs.data_ptr());
  const bool labels = meta.task == Task::Classification;
  out.file_targets = meta.target_width > 1 ? torch::empty({rows.size(), meta.target_width}, torch::kFloat)
                                           : torch::empty({rows.size()}, labels ? torch::kInt32 : torch::kFloat);
  read_rows(file, meta.targets_path(split), rows.begin, rows.size(), labels ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT,
            out.file_targets.data_ptr());
  bytes_read += out.samples.inputs.numel() * out.samples.inputs.element_size() + out.file_targets.numel() * 4;
  out.samples.targets = labels ? out.file_targets.to(torch::kInt64) : out.file_targets;
  return out;
}

void check_targets(const DatasetMeta& meta, const std::string& split, std::int64_t first_row, const StoredRows& rows) {
  const std::string where = meta.path + ": " + meta.targets_path(split);
  if (meta.task == Task::Classification) {
    const auto* y = rows.file_targets.data_ptr<std::int32_t>();
    for (std::int64_t i = 0; i < rows.file_targets.numel(); ++i) {
      if (y[i] < 0 || y[i] >= meta.num_classes) {
        throw DataError(where + "[" + std::to_string(first_row + i) + "] = " + std::to_string(y[i]) +
                        " is out of range [0, " + std::to_string(meta.num_classes) + ") (num_classes attribute)");
      }
    }
    return;
  }
  const auto* y = rows.file_targets.data_ptr<float>();
  for (std::int64_t i = 0; i < rows.file_targets.numel(); ++i) {
    if (!std::isfinite(y[i])) {
      throw DataError(where + "[" + std::to_string(first_row + i / meta.target_width) + "] is not finite");
    }
  }
  if (meta.float_inputs()) {
    const auto* x = rows.samples.inputs.data_ptr<float>();
    const std::int64_t f = meta.sample_elements();
    for (std::int64_t i = 0; i < rows.samples.inputs.numel(); ++i) {
      if (!std::isfinite(x[i])) {
        throw DataError(meta.path + ": " + meta.inputs_path(split) + "[" + std::to_string(first_row + i / f) + ", " +
                        std::to_string(i % f) + "] is not finite");
      }
    }
  }
}

void verify(const std::string& what, const std::string& expected, const torch::Tensor& t, const Communicator& comm,
            const std::string& path) {
  const std::string got = chained_sha256(t.data_ptr(), static_cast<std::size_t>(t.numel() * t.element_size()), comm);
  if (expected.empty())
    throw DataError(path + ": " + what + " has no sha256 attribute (set data.verify_hashes=false to skip)");
  if (got != expected) {
    throw DataError(path + ": " + what + " does not match its sha256 attribute (stored " + expected + ", computed " +
                    got + "): the file is corrupt or was modified");
  }
}

}  // namespace

std::string chained_sha256(const void* data, std::size_t bytes, const Communicator& comm) {
  Sha256 h;
  if (comm.rank() > 0) {
    Sha256::State s{};
    HPCTRAIN_MPI(MPI_Recv(&s, sizeof(s), MPI_BYTE, comm.rank() - 1, 11, comm.raw(), MPI_STATUS_IGNORE));
    h = Sha256(s);
  }
  h.update(data, bytes);
  std::string hex;
  if (comm.rank() + 1 < comm.size()) {
    Sha256::State s = h.state();
    HPCTRAIN_MPI(MPI_Send(&s, sizeof(s), MPI_BYTE, comm.rank() + 1, 11, comm.raw()));
  } else {
    hex = h.hex_digest();
  }
  comm.broadcast(hex, comm.size() - 1);
  return hex;
}

ShardedDataset ShardedDataset::load(const DataConfig& config, std::uint64_t seed, const Communicator& comm) {
  ShardedDataset d = load_shards(config, seed, comm);
  d.use_split(split_train_validation(d.n_train_, config.val_fraction, seed), config, seed, comm);
  return d;
}

ShardedDataset ShardedDataset::load_shards(const DataConfig& config, std::uint64_t seed, const Communicator& comm) {
  // Each phase ends in collective_check, so a rank that fails never leaves the others
  // waiting in the next collective.
  ShardedDataset d;
  d.config_ = config;
  d.seed_ = seed;
  const double t0 = wall_seconds();
  // Closing an MPI-IO file is collective: the file lives only in this scope, which every
  // rank leaves through the same collective_check outcomes.
  StoredRows train, test;
  Range test_rows;
  {
    H5File file;
    collective_check(comm, [&] {
      file = H5File::open_read(config.path, comm.raw());
      d.meta_ = read_dataset_meta(file);
      d.n_train_ = d.meta_.train.count;
      if (config.limit_train > 0) d.n_train_ = std::min(d.n_train_, config.limit_train);
      if (d.n_train_ < comm.size()) {
        throw DataError(config.path + ": " + std::to_string(d.n_train_) + " training samples cannot be shared by " +
                        std::to_string(comm.size()) + " ranks");
      }
      if (config.verify_hashes && config.limit_train > 0 && config.limit_train < d.meta_.train.count) {
        throw ConfigError(
            "data.limit_train: hash verification covers whole datasets; set data.verify_hashes=false "
            "together with data.limit_train");
      }
    });
    d.shard_ = block_range(d.n_train_, comm.size(), comm.rank());
    for (int r = 0; r <= comm.size(); ++r) {
      d.shard_begins_.push_back(r < comm.size() ? block_range(d.n_train_, comm.size(), r).begin : d.n_train_);
    }
    test_rows = block_range(d.meta_.test.count, comm.size(), comm.rank());
    collective_check(comm, [&] {
      train = read_split(file, d.meta_, "train", d.shard_, d.stats_.bytes_read);
      test = read_split(file, d.meta_, "test", test_rows, d.stats_.bytes_read);
    });
  }
  d.train_shard_ = train.samples;
  d.test_ = test.samples;
  d.stats_.read_seconds = wall_seconds() - t0;
  collective_check(comm, [&] {
    check_targets(d.meta_, "train", d.shard_.begin, train);
    check_targets(d.meta_, "test", test_rows.begin, test);
  });

  if (config.verify_hashes) {
    const double t1 = wall_seconds();
    collective_check(comm, [&] {
      verify(d.meta_.inputs_path("train"), d.meta_.train.inputs_sha256, train.samples.inputs, comm, config.path);
      verify(d.meta_.targets_path("train"), d.meta_.train.targets_sha256, train.file_targets, comm, config.path);
      verify(d.meta_.inputs_path("test"), d.meta_.test.inputs_sha256, test.samples.inputs, comm, config.path);
      verify(d.meta_.targets_path("test"), d.meta_.test.targets_sha256, test.file_targets, comm, config.path);
    });
    d.stats_.verify_seconds = wall_seconds() - t1;
  }
  return d;
}

void ShardedDataset::use_split(TrainValSplit split, const DataConfig& options, std::uint64_t seed,
                               const Communicator& comm) {
  seed_ = seed;
  const std::string path = config_.path;
  const std::int64_t limit = config_.limit_train;
  config_ = options;
  config_.path = path;
  config_.limit_train = limit;
  split_ = std::move(split);
  // Normalization: per-channel (or per-feature) sums over this rank's training rows.
  const std::int64_t channels = meta_.sample_shape[0];
  std::vector<double> sums(static_cast<std::size_t>(2 * channels + 3), 0.0);
  {
    // This rank's training rows, as positions in its shard.
    std::vector<std::int64_t> rows;
    auto lo = std::lower_bound(split_.train.begin(), split_.train.end(), shard_.begin);
    for (auto it = lo; it != split_.train.end() && *it < shard_.end; ++it) rows.push_back(*it - shard_.begin);
    // In blocks, so the double-precision copy stays small; a shard may hold no training row.
    constexpr std::size_t kBlock = 4096;
    for (std::size_t start = 0; start < rows.size(); start += kBlock) {
      const auto len = static_cast<std::int64_t>(std::min(kBlock, rows.size() - start));
      const auto index = torch::from_blob(rows.data() + start, {len}, torch::kInt64);
      auto x = train_shard_.inputs.index_select(0, index).to(torch::kDouble);
      auto per_channel = x.transpose(0, 1).reshape({channels, -1});
      auto s = per_channel.sum(1), sq = per_channel.pow(2).sum(1);
      for (std::int64_t c = 0; c < channels; ++c) {
        sums[c] += s[c].item<double>();
        sums[channels + c] += sq[c].item<double>();
      }
      sums[2 * channels] += static_cast<double>(per_channel.size(1));
      if (!classification()) {
        auto y = train_shard_.targets.index_select(0, index).to(torch::kDouble);
        sums[2 * channels + 1] += y.sum().item<double>();
        sums[2 * channels + 2] += y.pow(2).sum().item<double>();
      }
    }
  }
  comm.allreduce_sum(sums.data(), sums.size());
  mean_.clear();
  std_.clear();
  for (std::int64_t c = 0; c < channels; ++c) {
    const double n = std::max(1.0, sums[2 * channels]);
    const double mean = sums[c] / n;
    const double var = std::max(0.0, sums[channels + c] / n - mean * mean);
    mean_.push_back(config_.normalize ? mean : 0.0);
    // Images without normalization are scaled to [0, 1]; features are left as they are.
    const double unscaled = meta_.float_inputs() ? 1.0 : 255.0;
    std_.push_back(config_.normalize ? std::max(std::sqrt(var), 1e-6) : unscaled);
  }
  if (!classification() && config_.normalize_targets) {
    // One mean and deviation over every target value (the S steps of a series are one variable).
    const double n = std::max(1.0, static_cast<double>(split_.train.size() * meta_.target_width));
    target_mean_ = sums[2 * channels + 1] / n;
    target_std_ = std::max(std::sqrt(std::max(0.0, sums[2 * channels + 2] / n - target_mean_ * target_mean_)), 1e-12);
  } else {
    target_mean_ = 0.0;
    target_std_ = 1.0;
  }
  std::vector<std::int64_t> view(meta_.sample_shape.size() + 1, 1);
  view[1] = channels;
  mean_t_ = torch::tensor(std::vector<float>(mean_.begin(), mean_.end())).view(view);
  std::vector<float> inv;
  for (double sd : std_) inv.push_back(static_cast<float>(1.0 / sd));
  inv_std_t_ = torch::tensor(inv).view(view);

  // Held-out rows: contiguous slices of the (sorted) list, gathered from the shards.
  const double t2 = wall_seconds();
  std::vector<std::vector<std::int64_t>> wanted(static_cast<std::size_t>(comm.size()));
  const auto n_val = static_cast<std::int64_t>(split_.validation.size());
  for (int r = 0; r < comm.size(); ++r) {
    const Range part = block_range(n_val, comm.size(), r);
    wanted[r].assign(split_.validation.begin() + part.begin, split_.validation.begin() + part.end);
  }
  validation_ = exchange(wanted, comm);
  stats_.exchange_seconds = wall_seconds() - t2;
}

std::vector<std::int32_t> ShardedDataset::all_train_labels(const Communicator& comm) const {
  // Small (4 bytes a sample): a sum of disjoint contributions is the simplest allgather.
  std::vector<std::int64_t> all(static_cast<std::size_t>(n_train_), 0);
  if (classification()) {
    const auto* y = train_shard_.targets.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < shard_.size(); ++i) all[static_cast<std::size_t>(shard_.begin + i)] = y[i];
  }
  comm.allreduce_sum(all.data(), all.size());
  return std::vector<std::int32_t>(all.begin(), all.end());
}

Samples ShardedDataset::exchange(const std::vector<std::vector<std::int64_t>>& wanted, const Communicator& comm) const {
  const int p = comm.size(), me = comm.rank();
  const std::int64_t sample = meta_.sample_bytes();
  const std::int64_t target = train_shard_.targets.element_size() * meta_.target_width;  // bytes a row
  const std::int64_t row = sample + target;
  auto owner = [&](std::int64_t idx) {
    return static_cast<int>(std::upper_bound(shard_begins_.begin(), shard_begins_.end(), idx) - shard_begins_.begin()) -
           1;
  };
  // Pack: for each destination, my rows it wants, in its order.
  std::vector<std::int64_t> send_counts(p, 0), recv_counts(p, 0);
  for (int r = 0; r < p; ++r) {
    for (auto idx : wanted[r]) {
      if (idx >= shard_.begin && idx < shard_.end) send_counts[r] += row;
    }
  }
  for (auto idx : wanted[me]) recv_counts[owner(idx)] += row;
  std::int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < p; ++r) {
    send_total += send_counts[r];
    recv_total += recv_counts[r];
  }
  std::vector<std::uint8_t> send(static_cast<std::size_t>(send_total)), recv(static_cast<std::size_t>(recv_total));
  const auto* inputs = static_cast<const std::uint8_t*>(train_shard_.inputs.data_ptr());
  const auto* targets = static_cast<const std::uint8_t*>(train_shard_.targets.data_ptr());
  std::uint8_t* out = send.data();
  for (int r = 0; r < p; ++r) {
    for (auto idx : wanted[r]) {
      if (idx < shard_.begin || idx >= shard_.end) continue;
      const std::int64_t local = idx - shard_.begin;
      std::memcpy(out, inputs + local * sample, static_cast<std::size_t>(sample));
      std::memcpy(out + sample, targets + local * target, static_cast<std::size_t>(target));
      out += row;
    }
  }
  comm.alltoallv(send.data(), send_counts, recv.data(), recv_counts);

  // Unpack in my order: rows from each source arrive in the order I listed them.
  std::vector<std::int64_t> cursor(p, 0);
  for (int r = 1; r < p; ++r) cursor[r] = cursor[r - 1] + recv_counts[r - 1];
  const auto n = static_cast<std::int64_t>(wanted[me].size());
  std::vector<std::int64_t> shape{n};
  shape.insert(shape.end(), meta_.sample_shape.begin(), meta_.sample_shape.end());
  Samples result;
  result.inputs = torch::empty(shape, train_shard_.inputs.scalar_type());
  result.targets = meta_.target_width > 1 ? torch::empty({n, meta_.target_width}, train_shard_.targets.scalar_type())
                                          : torch::empty({n}, train_shard_.targets.scalar_type());
  auto* dst = static_cast<std::uint8_t*>(result.inputs.data_ptr());
  auto* dst_targets = static_cast<std::uint8_t*>(result.targets.data_ptr());
  for (std::int64_t i = 0; i < n; ++i) {
    const int src = owner(wanted[me][i]);
    const std::uint8_t* in = recv.data() + cursor[src];
    std::memcpy(dst + i * sample, in, static_cast<std::size_t>(sample));
    std::memcpy(dst_targets + i * target, in + sample, static_cast<std::size_t>(target));
    cursor[src] += row;
  }
  return result;
}

Samples ShardedDataset::epoch(std::int64_t epoch, std::int64_t global_batch, const Communicator& comm,
                              std::vector<std::int64_t>* indices) const {
  const auto n = static_cast<std::int64_t>(split_.train.size());
  const auto order = global_permutation(n, seed_, Stream::EpochOrder, static_cast<std::uint64_t>(epoch));
  const std::int64_t steps = steps_per_epoch(n, global_batch);
  std::vector<std::vector<std::int64_t>> wanted(static_cast<std::size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) {
    const Range slice = batch_slice(global_batch, comm.size(), r);
    wanted[r].reserve(static_cast<std::size_t>(steps * slice.size()));
    for (std::int64_t s = 0; s < steps; ++s) {
      for (std::int64_t i = slice.begin; i < slice.end; ++i)
        wanted[r].push_back(split_.train[order[s * global_batch + i]]);
    }
  }
  Samples out = exchange(wanted, comm);
  if (indices != nullptr) *indices = std::move(wanted[comm.rank()]);
  return out;
}

torch::Tensor ShardedDataset::to_input(const torch::Tensor& inputs) const {
  return inputs.to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true).sub_(mean_t_).mul_(inv_std_t_);
}

torch::Tensor ShardedDataset::to_target(const torch::Tensor& targets) const {
  if (classification()) return targets;
  return (targets - target_mean_) / target_std_;
}

}  // namespace hpctrain
