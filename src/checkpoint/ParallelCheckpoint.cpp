// save_checkpoint_parallel: a sharded run's checkpoint written by every rank at once
// (docs/checkpoints.md, "Parallel writes"). The file is the one save_checkpoint writes but
// for its checksum (format version 2: one SHA-256 per part, a part being what one rank wrote
// of a dataset), so every reader of checkpoints reads it.
//
// Why not collective parallel HDF5 (MPI-IO): HDF5 cannot recover from a failed write or
// close (io/Hdf5.hpp), and a full disk must end in one clear error with the previous
// checkpoints intact. So HDF5 only builds the file's structure, in memory (H5Skeleton), with
// space reserved for the parameters and optimizer state; the bytes reach the disk through
// checked positioned writes of our own, every rank its slices straight into the reserved
// ranges. No rank gathers the model's state, and the hashing is spread over the ranks.
#include <algorithm>
#include <cstring>

#include "checkpoint/Checkpoint.hpp"
#include "checkpoint/CheckpointFile.hpp"
#include "checkpoint/CheckpointParts.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"

namespace hpctrain {
using namespace checkpoint_file;
namespace {

// Slices are written as they lie in memory into float32 little-endian datasets (H5T_IEEE_F32LE).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "parallel checkpoint writes assume a little-endian host");

std::string slice_dataset(const CheckpointSlice& s) {
  return s.key.empty() ? parameter_dataset(s.parameter) : state_dataset(s.parameter, s.key);
}

std::int64_t slice_bytes(const CheckpointSlice& s) {
  return s.values.numel() * 4;
}

std::vector<PartDigest> hash_slices(const std::vector<CheckpointSlice>& slices) {
  std::vector<PartDigest> parts;
  for (const auto& s : slices) {
    if (s.values.scalar_type() != torch::kFloat || !s.values.is_contiguous() || !s.values.device().is_cpu()) {
      throw std::logic_error("save_checkpoint_parallel: a slice that is not contiguous float32 on the CPU");
    }
    if (s.values.numel() == 0) continue;
    parts.push_back(digest_part(slice_dataset(s), 4 * s.begin, s.values.data_ptr(), slice_bytes(s)));
  }
  return parts;
}

// The first replica of each stage tells its parameters' shapes (another stage's parameters
// may be empty on the group's rank 0), which optimizer state they have, and their step counts
// (small: written by the group's rank 0 with the structure).
void add_state_description(CheckpointParts& parts, const ShardedCheckpointState& state, torch::nn::Module& model,
                           const CheckpointLayout& layout) {
  const auto params = model.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (layout.holds_parameter(i)) parts["s/" + index_name(i)] = torch::tensor(params[i].sizes().vec(), torch::kLong);
  }
  const auto& keys = optimizer_state_keys();
  for (const auto& [i, names] : state.state_keys) {
    std::vector<std::int64_t> which;
    for (const auto& name : names) {
      which.push_back(static_cast<std::int64_t>(std::find(keys.begin(), keys.end(), name) - keys.begin()));
    }
    parts["k/" + index_name(i)] = torch::tensor(which, torch::kLong);
  }
  for (const auto& [i, step] : state.steps) parts["o/" + index_name(i) + "/step"] = torch::tensor({step}, torch::kLong);
}

// On the group's rank 0: builds the file's structure with every small dataset and the
// checksum over all parts (`digests`, every rank's), creates `tmp` at its full length with
// those bytes, and returns where each reserved dataset's data lies.
CheckpointParts write_structure(const std::string& tmp, const std::string& config_json, const std::string& model_json,
                                const LoopPosition& position, torch::nn::Module& model, const GatheredParts& all,
                                const std::vector<PartDigest>& digests, std::int64_t structure_bytes, int world_size,
                                const CheckpointLayout& layout) {
  CheckpointParts offsets;
  // Small datasets, a few KiB of structure per dataset, and the checksum table.
  const auto params = model.named_parameters();
  const std::int64_t structure = structure_bytes + (4 << 10) * 4 * static_cast<std::int64_t>(params.size() + 16) +
                                 64 * static_cast<std::int64_t>(digests.size());
  H5Skeleton skeleton(tmp, structure);
  H5File& file = skeleton.file();
  write_attributes(file, kCheckpointVersionParts, position.step, world_size, layout);
  Writer w(file, /*parts=*/true);
  w.text("/config_json", config_json);
  w.text("/model_json", model_json);
  w.text("/position_json", position_text(position));
  if (!layout.stage_split.empty()) w.tensor("/pipeline/stage_split", torch::tensor(layout.stage_split, torch::kLong));
  std::vector<std::vector<std::int64_t>> shapes;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor* shape = all.find("s/" + index_name(i), 0);
    if (shape == nullptr) throw RuntimeFailure("checkpoint: no stage described parameter " + params[i].key());
    shapes.emplace_back(shape->data_ptr<std::int64_t>(), shape->data_ptr<std::int64_t>() + shape->numel());
  }
  auto reserve = [&](const std::string& name, std::size_t i, const std::string& label) {
    if (std::find(shapes[i].begin(), shapes[i].end(), 0) != shapes[i].end()) {  // no elements: nothing to reserve
      w.tensor(name, torch::empty(shapes[i], torch::kFloat), label);
      return;
    }
    offsets[name] = torch::tensor({w.reserve(skeleton, name, shapes[i], label)}, torch::kLong);
  };
  for (std::size_t i = 0; i < params.size(); ++i) reserve(parameter_dataset(i), i, params[i].key());
  const auto& keys = optimizer_state_keys();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor* which = all.find("k/" + index_name(i), 0);
    if (which == nullptr) throw RuntimeFailure("checkpoint: no stage described parameter " + params[i].key());
    std::vector<bool> present(keys.size(), false);
    for (std::int64_t k = 0; k < which->numel(); ++k)
      present[static_cast<std::size_t>((*which)[k].item<std::int64_t>())] = true;
    for (std::size_t k = 0; k < keys.size(); ++k) {
      if (keys[k] == "step") {
        if (const torch::Tensor* step = all.find("o/" + index_name(i) + "/step", 0)) {
          w.tensor(state_dataset(i, "step"), *step);
        }
      } else if (present[k]) {
        reserve(state_dataset(i, keys[k]), i, "");
      }
    }
  }
  write_replica_parts(w, all, model, layout);
  w.add_parts(digests);
  w.finish();
  const H5Skeleton::Image image = skeleton.finish();
  std::vector<FilePiece> pieces;
  for (const auto& [offset, bytes] : image.pieces) pieces.push_back({offset, bytes});
  write_pieces(tmp, pieces, image.size);
  return offsets;
}

// Every rank: its slices into `tmp` at their places, fsynced, then read back and compared.
void write_slices(const std::string& tmp, const std::vector<CheckpointSlice>& slices, const CheckpointParts& offsets) {
  std::vector<FilePiece> pieces;
  for (const auto& s : slices) {
    if (s.values.numel() == 0) continue;
    const auto it = offsets.find(slice_dataset(s));
    if (it == offsets.end()) throw RuntimeFailure("checkpoint: no place in the file for " + slice_dataset(s));
    const std::int64_t offset = it->second.item<std::int64_t>() + 4 * s.begin;
    pieces.push_back({offset, std::string_view(static_cast<const char*>(s.values.data_ptr()),
                                               static_cast<std::size_t>(slice_bytes(s)))});
  }
  write_pieces(tmp, pieces);
  // What the file system returns is what was hashed and written (as the serial path reads
  // its file back before pruning).
  for (const auto& piece : pieces) {
    if (read_piece(tmp, piece.offset, static_cast<std::int64_t>(piece.bytes.size())) != piece.bytes) {
      throw RuntimeFailure(tmp + ": bytes at " + std::to_string(piece.offset) + " read back differently");
    }
  }
}

}  // namespace

void save_checkpoint_parallel(const std::string& path, const std::string& config_json, const std::string& model_json,
                              const LoopPosition& position, torch::nn::Module& model,
                              const ShardedCheckpointState& state, const RankState& mine, const Communicator& group,
                              const CheckpointLayout& layout) {
  if (group.size() != layout.stages * layout.replicas) {
    throw RuntimeFailure("checkpoint: a grid of " + std::to_string(layout.stages) + " x " +
                         std::to_string(layout.replicas) + " over " + std::to_string(group.size()) + " ranks");
  }
  const bool root = group.rank() == 0;
  const std::string tmp = temporary_path(path);
  CheckpointParts offsets;
  try {
    std::vector<PartDigest> digests;
    CheckpointParts own;
    collective_check(group, [&] {
      digests = hash_slices(state.slices);
      own = rank_parts(model, mine, layout);
      if (layout.replica == 0) add_state_description(own, state, model, layout);
    });
    const auto parts = group.gather_bytes(root ? std::string() : pack_parts(own), 0);
    const auto hashes = group.gather_bytes(pack_digests(digests), 0);
    collective_check(group, [&] {
      if (!root) return;
      std::vector<PartDigest> every;
      for (std::size_t r = 0; r < hashes.size(); ++r) {
        auto theirs = unpack_digests(hashes[r], "checkpoint: the checksums of rank " + std::to_string(r));
        every.insert(every.end(), theirs.begin(), theirs.end());
      }
      std::int64_t small = 0;  // the gathered parts: buffers, generators, sums
      for (const auto& p : parts) small += static_cast<std::int64_t>(p.size());
      const GatheredParts all(std::move(own), parts);
      offsets = write_structure(tmp, config_json, model_json, position, model, all, every,
                                small + static_cast<std::int64_t>(config_json.size() + model_json.size()), group.size(),
                                layout);
    });
    std::string where = root ? pack_parts(offsets) : std::string();
    group.broadcast(where, 0);
    if (!root) offsets = unpack_parts(where, "checkpoint: the places of the datasets");
    collective_check(group, [&] { write_slices(tmp, state.slices, offsets); });
  } catch (...) {
    if (root) discard_file(tmp);
    throw;
  }
  if (root) publish_file(tmp, path);
}

}  // namespace hpctrain
