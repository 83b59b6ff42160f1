// ShardedDataset over real ranks: shards read collectively, the chained hash, the per-epoch
// exchange giving the same global batches for any rank count, and per-rank failures that
// every rank reports together.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include "comm/Communicator.hpp"
#include "data/ShardedDataset.hpp"
#include "io/DatasetLayout.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"

using namespace hpctrain;

namespace {

constexpr std::int64_t kTrain = 203, kTest = 57;

// Rank 0 writes a small data set in which every image's first byte encodes its index.
std::string shared_file(const Communicator& world, const std::string& tag, int bad_label_at = -1) {
  std::string path = "/tmp/hpctrain_imagedata_" + tag + "_" + std::to_string(getppid()) + ".h5";
  if (world.rank() == 0) {
    H5File f = H5File::create(path);
    write_dataset_header(f, "synthetic", "test", {"a", "b", "c", "d"});
    for (auto [split, n] : {std::pair<std::string, std::int64_t>{"train", kTrain}, {"test", kTest}}) {
      std::vector<std::uint8_t> images(static_cast<std::size_t>(n * 3 * 3));
      std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) {
        images[i * 9] = static_cast<std::uint8_t>(i % 251);
        images[i * 9 + 1] = static_cast<std::uint8_t>(i / 251);
        for (int k = 2; k < 9; ++k) images[i * 9 + k] = static_cast<std::uint8_t>(k * 20);
        labels[i] = static_cast<std::int32_t>(i % 4);
      }
      if (split == "train" && bad_label_at >= 0) labels[bad_label_at] = 9;
      write_split(f, split, {1, 3, 3}, images, labels);
    }
  }
  world.barrier();
  return path;
}

std::int64_t index_of(const torch::Tensor& image) {
  auto flat = image.reshape({-1});
  return flat[0].item<std::int64_t>() + 251 * flat[1].item<std::int64_t>();
}

}  // namespace

TEST(ShardedDataset, ShardsValidationAndTestCoverTheFile) {
  Communicator world = Communicator::world();
  const std::string path = shared_file(world, "cover");
  DataConfig c;
  c.path = path;
  c.val_fraction = 0.1;
  ShardedDataset d = ShardedDataset::load(c, 7, world);
  EXPECT_EQ(d.train_count() + static_cast<std::int64_t>(d.split().validation.size()), kTrain);
  std::int64_t counts[2] = {d.validation().size(), d.test().size()};
  world.allreduce_sum(counts, 2);
  EXPECT_EQ(counts[0], static_cast<std::int64_t>(d.split().validation.size()));
  EXPECT_EQ(counts[1], kTest);
  // Validation rows are the samples the split names, in order.
  const Range part = block_range(static_cast<std::int64_t>(d.split().validation.size()), world.size(), world.rank());
  for (std::int64_t i = 0; i < d.validation().size(); ++i) {
    const std::int64_t idx = d.split().validation[part.begin + i];
    EXPECT_EQ(index_of(d.validation().inputs[i]), idx);
    EXPECT_EQ(d.validation().targets[i].item<std::int64_t>(), idx % 4);
  }
  if (world.rank() == 0) std::remove(path.c_str());
}

TEST(ShardedDataset, EpochRowsAreTheRanksSliceOfEachGlobalBatch) {
  Communicator world = Communicator::world();
  const std::string path = shared_file(world, "epoch");
  DataConfig c;
  c.path = path;
  ShardedDataset d = ShardedDataset::load(c, 11, world);
  const std::int64_t batch = 16;
  for (std::int64_t epoch : {0, 3}) {
    const Samples e = d.epoch(epoch, batch, world);
    const auto expected = epoch_samples_for_rank(d.split().train, batch, epoch, 11, world.size(), world.rank());
    ASSERT_EQ(e.size(), static_cast<std::int64_t>(expected.size()));
    for (std::int64_t i = 0; i < e.size(); ++i) {
      EXPECT_EQ(index_of(e.inputs[i]), expected[i]);
      EXPECT_EQ(e.targets[i].item<std::int64_t>(), expected[i] % 4);
    }
  }
  if (world.rank() == 0) std::remove(path.c_str());
}

TEST(ShardedDataset, ChainedHashEqualsTheSerialHash) {
  Communicator world = Communicator::world();
  std::vector<std::uint8_t> all(1000);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint8_t>(i * 13);
  const Range mine = block_range(1000, world.size(), world.rank());
  EXPECT_EQ(chained_sha256(all.data() + mine.begin, static_cast<std::size_t>(mine.size()), world),
            Sha256::hex(all.data(), all.size()));
}

TEST(ShardedDataset, LabelOutOfRangeOnOneShardFailsEveryRank) {
  Communicator world = Communicator::world();
  const std::string path = shared_file(world, "badlabel", static_cast<int>(kTrain - 1));  // last rank's shard
  DataConfig c;
  c.path = path;
  c.verify_hashes = false;
  try {
    ShardedDataset::load(c, 1, world);
    FAIL() << "expected a failure";
  } catch (const CollectiveError& e) {
    EXPECT_EQ(e.origin_rank(), world.size() - 1);
    EXPECT_NE(std::string(e.what()).find("/train/labels[202] = 9 is out of range [0, 4)"), std::string::npos)
        << e.what();
  }
  if (world.rank() == 0) std::remove(path.c_str());
}

TEST(ShardedDataset, CorruptedBytesFailHashVerification) {
  Communicator world = Communicator::world();
  const std::string path = shared_file(world, "corrupt");
  if (world.rank() == 0) {
    // Overwrite one stored hash: the data no longer matches it.
    H5File f;
    {
      H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
      H5Adelete_by_name(file, "/test/images", "sha256", H5P_DEFAULT);
    }
    H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    H5Id type(H5Tcopy(H5T_C_S1));
    H5Tset_size(type, 64);
    H5Id space(H5Screate(H5S_SCALAR));
    H5Id attr(H5Acreate_by_name(file, "/test/images", "sha256", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    const std::string zeros(64, '0');
    H5Awrite(attr, type, zeros.data());
  }
  world.barrier();
  DataConfig c;
  c.path = path;
  try {
    ShardedDataset::load(c, 1, world);
    FAIL() << "expected a failure";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("/test/images does not match its sha256"), std::string::npos) << e.what();
  }
  if (world.rank() == 0) std::remove(path.c_str());
}
