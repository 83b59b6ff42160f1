#pragma once
// The checkpoint file's layout (docs/checkpoints.md), shared by the serial writer and reader
// (Checkpoint.cpp) and the parallel writer (ParallelCheckpoint.cpp). Internal to checkpoint/.
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/Checkpoint.hpp"
#include "checkpoint/CheckpointParts.hpp"
#include "io/Hdf5.hpp"
#include "util/Sha256.hpp"

namespace hpctrain::checkpoint_file {

hid_t file_type(torch::ScalarType t);
torch::Tensor read_tensor(const H5File& file, const std::string& name);
// Dataset `name` (float32) whole into `out`: float32, contiguous, on the CPU, as many elements.
void read_into(const H5File& file, const std::string& name, const torch::Tensor& out);
std::string read_text(const H5File& file, const std::string& name);

std::string index_name(std::size_t i);                              // 00042
std::string parameter_dataset(std::size_t i);                       // /model/parameters/00042
std::string state_dataset(std::size_t i, const std::string& key);   // /optimizer/00042/exp_avg
std::string rank_group(std::int64_t replica);                       // /ranks/R
std::string state_group(std::int64_t replica, std::int64_t stage);  // /ranks/R or /ranks/R/stages/S
std::string position_text(const LoopPosition& p);
LoopPosition parse_position(const std::string& text);

// Version 2's checksum parts: the SHA-256 of bytes [first_byte, first_byte + bytes) of a
// dataset's data (C order, little-endian).
struct PartDigest {
  std::string dataset;
  std::int64_t first_byte = 0;
  std::int64_t bytes = 0;
  std::array<std::uint8_t, 32> sha256{};
};
PartDigest digest_part(const std::string& dataset, std::int64_t first_byte, const void* data, std::int64_t bytes);
// The file's checksum over the parts in order: for each, its dataset's path, a zero byte,
// first byte and length (64-bit little-endian) and its SHA-256.
std::string parts_checksum(const std::vector<PartDigest>& parts);
std::string pack_digests(const std::vector<PartDigest>& parts);
std::vector<PartDigest> unpack_digests(const std::string& bytes, const std::string& context);

// Datasets go into the file in one order, listed in /manifest, and into its checksum:
// version 1 one SHA-256 over every dataset in order; version 2 one per part, in the table
// /checksum/parts (manifest index, first byte, bytes) and /checksum/sha256.
class Writer {
 public:
  Writer(H5File& file, bool parts) : file_(file), parts_(parts) {}
  void tensor(const std::string& name, const torch::Tensor& value, const std::string& label = "");
  void text(const std::string& name, const std::string& value);
  // Version 2: float32 dataset `name` whose data others write (H5Skeleton::reserve); its parts
  // come through add_parts. Returns the offset of its data in the file.
  std::int64_t reserve(H5Skeleton& skeleton, const std::string& name, const std::vector<std::int64_t>& shape,
                       const std::string& label = "");
  void add_parts(const std::vector<PartDigest>& parts);
  // The manifest and the checksum. Version 2: throws RuntimeFailure unless every dataset's
  // parts cover its bytes exactly once.
  void finish();

 private:
  void listed(const std::string& name, std::int64_t bytes);
  H5File& file_;
  bool parts_;
  Sha256 hash_;
  std::vector<std::string> manifest_;
  std::map<std::string, std::pair<std::size_t, std::int64_t>> datasets_;  // index in the manifest, bytes
  std::vector<PartDigest> digests_;
};

// Version 2: checks the parts table against the manifest (each dataset covered exactly once)
// and, with `data`, every part's SHA-256; then the stored checksum. Throws DataError naming
// `file`.
void verify_parts(const H5File& file, const std::vector<std::string>& manifest, bool data);

// A rank's part of every checkpoint: its place in the grid, its buffers, epoch sums and
// generator.
CheckpointParts rank_parts(torch::nn::Module& model, const RankState& mine, const CheckpointLayout& layout);

// Every rank's parts on the group's rank 0, indexed by the rank's place in the grid.
class GatheredParts {
 public:
  GatheredParts(CheckpointParts own, const std::vector<std::string>& bytes);
  // The part `name` from the first rank (in rank order) of `replica` that has it.
  const torch::Tensor* find(const std::string& name, std::int64_t replica) const;
  // The part `name` of the rank at (stage, replica).
  const torch::Tensor& at(const std::string& name, std::int64_t stage, std::int64_t replica) const;

 private:
  std::vector<CheckpointParts> ranks_;
};

// The root attributes of a checkpoint (format, version, step, grid, creation time).
void write_attributes(H5File& file, std::int64_t version, std::int64_t step, std::int64_t world_size,
                      const CheckpointLayout& layout);
// Per replica: buffers in module order, then each stage's epoch sums and generator state.
void write_replica_parts(Writer& w, const GatheredParts& all, torch::nn::Module& model, const CheckpointLayout& layout);

}  // namespace hpctrain::checkpoint_file
