#include "data/ImageData.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "launch/Mpi.hpp"
#include "report/SystemStats.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {
namespace {

LabeledImages read_split(const H5File& file, const std::string& split, Range rows,
                         const std::vector<std::int64_t>& sample_shape, torch::Tensor& labels32,
                         std::int64_t& bytes_read) {
  std::vector<std::int64_t> shape{rows.size()};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  LabeledImages out;
  out.images = torch::empty(shape, torch::kUInt8);
  labels32 = torch::empty({rows.size()}, torch::kInt32);
  read_rows(file, "/" + split + "/images", rows.begin, rows.size(), H5T_NATIVE_UINT8, out.images.data_ptr());
  read_rows(file, "/" + split + "/labels", rows.begin, rows.size(), H5T_NATIVE_INT32, labels32.data_ptr());
  bytes_read += out.images.numel() + labels32.numel() * 4;
  out.labels = labels32.to(torch::kInt64);
  return out;
}

void check_labels(const std::string& path, const std::string& split, std::int64_t first_row,
                  const torch::Tensor& labels32, std::int64_t num_classes) {
  const auto* y = labels32.data_ptr<std::int32_t>();
  for (std::int64_t i = 0; i < labels32.numel(); ++i) {
    if (y[i] < 0 || y[i] >= num_classes) {
      throw DataError(path + ": /" + split + "/labels[" + std::to_string(first_row + i) +
                      "] = " + std::to_string(y[i]) + " is out of range [0, " + std::to_string(num_classes) +
                      ") (num_classes attribute)");
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

ImageData ImageData::load(const DataConfig& config, std::uint64_t seed, const Communicator& comm) {
  // Each phase ends in collective_check, so a rank that fails never leaves the others
  // waiting in the next collective.
  ImageData d;
  d.config_ = config;
  d.seed_ = seed;
  const double t0 = wall_seconds();
  H5File file;
  std::int64_t n_train = 0;
  collective_check(comm, [&] {
    file = H5File::open_read(config.path, comm.raw());
    d.meta_ = read_dataset_meta(file);
    n_train = d.meta_.train.count;
    if (config.limit_train > 0) n_train = std::min(n_train, config.limit_train);
    if (n_train < comm.size()) {
      throw DataError(config.path + ": " + std::to_string(n_train) + " training samples cannot be shared by " +
                      std::to_string(comm.size()) + " ranks");
    }
    if (config.verify_hashes && config.limit_train > 0 && config.limit_train < d.meta_.train.count) {
      throw ConfigError(
          "data.limit_train: hash verification covers whole datasets; set data.verify_hashes=false "
          "together with data.limit_train");
    }
  });

  d.split_ = split_train_validation(n_train, config.val_fraction, seed);
  d.shard_ = block_range(n_train, comm.size(), comm.rank());
  for (int r = 0; r <= comm.size(); ++r) {
    d.shard_begins_.push_back(r < comm.size() ? block_range(n_train, comm.size(), r).begin : n_train);
  }
  const Range test_rows = block_range(d.meta_.test.count, comm.size(), comm.rank());
  torch::Tensor train_labels32, test_labels32;
  collective_check(comm, [&] {
    d.train_shard_ = read_split(file, "train", d.shard_, d.meta_.sample_shape, train_labels32, d.stats_.bytes_read);
    d.test_ = read_split(file, "test", test_rows, d.meta_.sample_shape, test_labels32, d.stats_.bytes_read);
  });
  d.stats_.read_seconds = wall_seconds() - t0;
  collective_check(comm, [&] {
    check_labels(file.path(), "train", d.shard_.begin, train_labels32, d.meta_.num_classes);
    check_labels(file.path(), "test", test_rows.begin, test_labels32, d.meta_.num_classes);
  });

  if (config.verify_hashes) {
    const double t1 = wall_seconds();
    collective_check(comm, [&] {
      verify("/train/images", d.meta_.train.images_sha256, d.train_shard_.images, comm, config.path);
      verify("/train/labels", d.meta_.train.labels_sha256, train_labels32, comm, config.path);
      verify("/test/images", d.meta_.test.images_sha256, d.test_.images, comm, config.path);
      verify("/test/labels", d.meta_.test.labels_sha256, test_labels32, comm, config.path);
    });
    d.stats_.verify_seconds = wall_seconds() - t1;
  }

  // Normalization: per-channel sums over this rank's training (not validation) rows.
  const std::int64_t channels = d.meta_.sample_shape[0];
  std::vector<double> sums(static_cast<std::size_t>(2 * channels + 1), 0.0);
  {
    auto is_train = torch::ones({d.shard_.size()}, torch::kBool);
    auto lo = std::lower_bound(d.split_.validation.begin(), d.split_.validation.end(), d.shard_.begin);
    for (auto it = lo; it != d.split_.validation.end() && *it < d.shard_.end; ++it)
      is_train[*it - d.shard_.begin] = false;
    auto x = d.train_shard_.images.index({is_train}).to(torch::kDouble);
    auto per_channel = x.transpose(0, 1).reshape({channels, -1});
    auto s = per_channel.sum(1), sq = per_channel.pow(2).sum(1);
    for (std::int64_t c = 0; c < channels; ++c) {
      sums[c] = s[c].item<double>();
      sums[channels + c] = sq[c].item<double>();
    }
    sums[2 * channels] = static_cast<double>(per_channel.size(1));
  }
  comm.allreduce_sum(sums.data(), sums.size());
  for (std::int64_t c = 0; c < channels; ++c) {
    const double n = std::max(1.0, sums[2 * channels]);
    const double mean = sums[c] / n;
    const double var = std::max(0.0, sums[channels + c] / n - mean * mean);
    d.mean_.push_back(config.normalize ? mean : 0.0);
    d.std_.push_back(config.normalize ? std::max(std::sqrt(var), 1e-6) : 255.0);
  }
  d.mean_t_ = torch::tensor(std::vector<float>(d.mean_.begin(), d.mean_.end())).view({1, channels, 1, 1});
  std::vector<float> inv;
  for (double s : d.std_) inv.push_back(static_cast<float>(1.0 / s));
  d.inv_std_t_ = torch::tensor(inv).view({1, channels, 1, 1});

  // Validation: contiguous slices of the (sorted) validation list, gathered from the shards.
  const double t2 = wall_seconds();
  std::vector<std::vector<std::int64_t>> wanted(static_cast<std::size_t>(comm.size()));
  const auto n_val = static_cast<std::int64_t>(d.split_.validation.size());
  for (int r = 0; r < comm.size(); ++r) {
    const Range part = block_range(n_val, comm.size(), r);
    wanted[r].assign(d.split_.validation.begin() + part.begin, d.split_.validation.begin() + part.end);
  }
  d.validation_ = d.exchange(wanted, comm);
  d.stats_.exchange_seconds = wall_seconds() - t2;
  return d;
}

LabeledImages ImageData::exchange(const std::vector<std::vector<std::int64_t>>& wanted,
                                  const Communicator& comm) const {
  const int p = comm.size(), me = comm.rank();
  const std::int64_t sample = meta_.sample_bytes();
  const std::int64_t row = sample + static_cast<std::int64_t>(sizeof(std::int64_t));
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
  const auto* images = train_shard_.images.data_ptr<std::uint8_t>();
  const auto* labels = train_shard_.labels.data_ptr<std::int64_t>();
  std::uint8_t* out = send.data();
  for (int r = 0; r < p; ++r) {
    for (auto idx : wanted[r]) {
      if (idx < shard_.begin || idx >= shard_.end) continue;
      const std::int64_t local = idx - shard_.begin;
      std::memcpy(out, images + local * sample, static_cast<std::size_t>(sample));
      std::memcpy(out + sample, labels + local, sizeof(std::int64_t));
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
  LabeledImages result;
  result.images = torch::empty(shape, torch::kUInt8);
  result.labels = torch::empty({n}, torch::kInt64);
  auto* dst = result.images.data_ptr<std::uint8_t>();
  auto* dst_labels = result.labels.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const int src = owner(wanted[me][i]);
    const std::uint8_t* in = recv.data() + cursor[src];
    std::memcpy(dst + i * sample, in, static_cast<std::size_t>(sample));
    std::memcpy(dst_labels + i, in + sample, sizeof(std::int64_t));
    cursor[src] += row;
  }
  return result;
}

LabeledImages ImageData::epoch(std::int64_t epoch, std::int64_t global_batch, const Communicator& comm,
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
  LabeledImages out = exchange(wanted, comm);
  if (indices != nullptr) *indices = std::move(wanted[comm.rank()]);
  return out;
}

torch::Tensor ImageData::to_input(const torch::Tensor& images) const {
  return images.to(torch::kFloat).sub_(mean_t_).mul_(inv_std_t_);
}

}  // namespace hpctrain
