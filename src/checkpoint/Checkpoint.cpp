#include "checkpoint/Checkpoint.hpp"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "checkpoint/CheckpointFile.hpp"
#include "checkpoint/CheckpointParts.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {
using namespace checkpoint_file;
namespace {

// This rank's contribution: its stages' parameters and optimizer state when it is its
// stage's first replica, its buffers, sums and generator always.
CheckpointParts collect_parts(torch::nn::Module& model, torch::optim::Optimizer* optimizer, const RankState& mine,
                              const CheckpointLayout& layout) {
  CheckpointParts parts = rank_parts(model, mine, layout);
  if (layout.replica == 0) {
    if (optimizer == nullptr) throw std::logic_error("save_checkpoint: a first replica without optimizer state");
    const auto params = model.parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!layout.holds_parameter(i)) continue;
      parts["p/" + index_name(i)] = params[i].detach();
      for (const auto& [key, t] : optimizer_tensors(*optimizer, params[i])) parts["o/" + index_name(i) + "/" + key] = t;
    }
  }
  return parts;
}

void write_parts(Writer& w, const GatheredParts& all, torch::nn::Module& model, const CheckpointLayout& layout) {
  const auto params = model.named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor* t = all.find("p/" + index_name(i), 0);
    if (t == nullptr) throw RuntimeFailure("checkpoint: no stage sent parameter " + params[i].key());
    w.tensor(parameter_dataset(i), *t, params[i].key());
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    for (const auto& key : optimizer_state_keys()) {
      if (const torch::Tensor* t = all.find("o/" + index_name(i) + "/" + key, 0)) {
        w.tensor(state_dataset(i, key), *t);
      }
    }
  }
  write_replica_parts(w, all, model, layout);
}

}  // namespace

std::string checkpoint_file_name(std::int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "step_%010lld.h5", static_cast<long long>(step));
  return buf;
}

CheckpointLayout CheckpointLayout::data_parallel(const Communicator& comm) {
  CheckpointLayout layout;
  layout.replicas = comm.size();
  layout.replica = comm.rank();
  return layout;
}

std::string CheckpointInfo::describe_layout() const {
  std::string text = std::to_string(world_size) + (world_size == 1 ? " rank" : " ranks");
  if (stages > 1) text += " (" + std::to_string(stages) + " stages x " + std::to_string(replicas) + " replicas)";
  return text;
}

void save_checkpoint(const std::string& path, const std::string& config_json, const std::string& model_json,
                     const LoopPosition& position, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const RankState& mine, const Communicator& group, const CheckpointLayout& layout) {
  if (group.size() != layout.stages * layout.replicas) {
    throw RuntimeFailure("checkpoint: a grid of " + std::to_string(layout.stages) + " x " +
                         std::to_string(layout.replicas) + " over " + std::to_string(group.size()) + " ranks");
  }
  CheckpointParts own = collect_parts(model, optimizer, mine, layout);
  // The first rank keeps its own tensors as they are; the others send theirs packed.
  const std::vector<std::string> bytes = group.gather_bytes(group.rank() == 0 ? std::string() : pack_parts(own), 0);
  if (group.rank() != 0) return;
  const GatheredParts all(std::move(own), bytes);
  write_hdf5_atomically(path, [&](H5File& file) {
    write_attributes(file, kCheckpointVersion, position.step, group.size(), layout);
    Writer w(file, /*parts=*/false);
    w.text("/config_json", config_json);
    w.text("/model_json", model_json);
    w.text("/position_json", position_text(position));
    if (!layout.stage_split.empty()) {
      w.tensor("/pipeline/stage_split", torch::tensor(layout.stage_split, torch::kLong));
    }
    write_parts(w, all, model, layout);
    w.finish();
  });
}

CheckpointInfo verify_checkpoint(const std::string& path, bool data) {
  H5File file = H5File::open_read_serial(path);
  if (!file.has_attr("/", "format") || file.read_string_attr("/", "format") != kCheckpointFormat) {
    throw DataError(path + ": not an hpctrain checkpoint");
  }
  const std::int64_t version = file.read_int_attr("/", "format_version");
  if (version != kCheckpointVersion && version != kCheckpointVersionParts) {
    throw DataError(path + ": checkpoint format version " + std::to_string(version) +
                    ", this hpctrain reads versions " + std::to_string(kCheckpointVersion) + " and " +
                    std::to_string(kCheckpointVersionParts));
  }
  if (!file.has_attr("/", "sha256") || !file.has("/manifest")) {
    throw DataError(path + ": incomplete checkpoint (no checksum)");
  }
  const auto manifest = file.read_string_list("/manifest");
  if (version == kCheckpointVersionParts) {
    verify_parts(file, manifest, data);
  } else if (data) {
    Sha256 hash;
    for (const auto& name : manifest) {
      const auto t = read_tensor(file, name);
      hash.update(name.data(), name.size());
      hash.update(t.data_ptr(), static_cast<std::size_t>(t.numel() * t.element_size()));
    }
    const std::string stored = file.read_string_attr("/", "sha256");
    if (hash.hex_digest() != stored) {
      throw DataError(path + ": checksum mismatch (stored " + stored + ", computed " + hash.hex_digest() +
                      "): the checkpoint is corrupt");
    }
  }
  CheckpointInfo info;
  info.path = path;
  info.step = file.read_int_attr("/", "step");
  info.world_size = file.read_int_attr("/", "world_size");
  // Written before pipelines: one stage, every rank a replica.
  info.stages = file.has_attr("/", "pipeline_stages") ? file.read_int_attr("/", "pipeline_stages") : 1;
  info.replicas = file.has_attr("/", "replicas") ? file.read_int_attr("/", "replicas") : info.world_size;
  if (file.has("/pipeline/stage_split")) {
    const auto split = read_tensor(file, "/pipeline/stage_split");
    info.stage_split.assign(split.data_ptr<std::int64_t>(), split.data_ptr<std::int64_t>() + split.numel());
  }
  info.config_json = read_text(file, "/config_json");
  info.model_json = read_text(file, "/model_json");
  info.position = parse_position(read_text(file, "/position_json"));
  return info;
}

void restore_checkpoint(const CheckpointInfo& info, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                        RankState& mine, const CheckpointLayout& layout) {
  H5File file = H5File::open_read_serial(info.path);
  torch::NoGradGuard no_grad;
  const auto params = model.named_parameters();
  const std::string changed = " (was the model changed?)";
  const bool fewer = !params.is_empty() && !file.has(parameter_dataset(params.size() - 1));
  if (fewer || file.has(parameter_dataset(params.size()))) {
    throw ConfigError(info.path + ": the checkpoint holds another number of parameters than the model's " +
                      std::to_string(params.size()) + changed);
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!layout.holds_parameter(i)) continue;
    const std::string name = parameter_dataset(i);
    const std::string stored = file.read_string_attr(name, "name");
    if (stored != params[i].key()) {
      throw ConfigError(info.path + ": parameter " + std::to_string(i) + " is " + stored + " in the checkpoint, " +
                        params[i].key() + " in the model" + changed);
    }
    const DatasetInfo stored_shape = dataset_info(file, name);
    if (stored_shape.shape != params[i].value().sizes().vec()) {
      throw ConfigError(info.path + ": parameter " + params[i].key() + " has another shape in the checkpoint than " +
                        "in the model" + changed);
    }
    const torch::Tensor& value = params[i].value();
    if (value.is_cpu() && value.is_contiguous() && value.scalar_type() == torch::kFloat &&
        stored_shape.dtype == "float32") {
      read_into(file, name, value);  // no copy
    } else {
      value.copy_(read_tensor(file, name));
    }
    if (optimizer == nullptr) continue;
    std::map<std::string, torch::Tensor> values;
    for (const auto& key : optimizer_state_keys()) {
      const std::string state = state_dataset(i, key);
      // Optimizer state lives on the parameter's device.
      if (file.has(state)) values[key] = read_tensor(file, state).to(params[i].value().device());
    }
    set_optimizer_tensors(*optimizer, params[i].value(), values, info.path);
  }
  // As many replicas: each its own statistics. Otherwise the first replica's.
  const std::int64_t source = info.replicas == layout.replicas ? layout.replica : 0;
  const auto buffers = model.named_buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (!layout.holds_buffer(i)) continue;
    buffers[i].value().copy_(read_tensor(file, rank_group(source) + "/buffers/" + index_name(i)));
  }
  if (info.same_layout(layout)) {
    const std::string own = state_group(layout.replica, layout.stage);
    const auto sums = read_tensor(file, own + "/epoch_sums");
    mine.epoch_loss = sums[0].item<double>();
    mine.epoch_correct = static_cast<std::int64_t>(sums[1].item<double>());
    mine.rng = read_tensor(file, own + "/rng");
  }
}

struct CheckpointReader::File {
  H5File h5;
};

CheckpointReader::CheckpointReader(const CheckpointInfo& info)
    : file_(std::make_unique<File>(File{H5File::open_read_serial(info.path)})) {}

CheckpointReader::~CheckpointReader() = default;

bool CheckpointReader::read(std::size_t parameter, const std::string& key, std::int64_t begin,
                            torch::Tensor out) const {
  const H5File& file = file_->h5;
  const std::string name = key.empty() ? parameter_dataset(parameter) : state_dataset(parameter, key);
  if (!file.has(name)) return false;
  const std::string ctx = file.path() + ": reading " + name;
  const DatasetInfo info = dataset_info(file, name);
  if (info.dtype != "float32") throw DataError(ctx + ": " + info.dtype + ", not float32");
  std::int64_t elements = 1;
  for (auto d : info.shape) elements *= d;
  if (begin < 0 || begin + out.numel() > elements) throw DataError(ctx + ": fewer elements than the model's");
  if (out.numel() == 0) return true;
  if (begin == 0 && out.numel() == elements) {  // the whole dataset
    read_into(file, name, out);
    return true;
  }
  H5Id ds(h5_check(H5Dopen2(file.id(), name.c_str(), H5P_DEFAULT), ctx));
  H5Id space(h5_check(H5Dget_space(ds), ctx));
  select_c_order_range(space, info.shape, begin, begin + out.numel(), ctx);
  const hsize_t count = static_cast<hsize_t>(out.numel());
  H5Id memory(h5_check(H5Screate_simple(1, &count, nullptr), ctx));
  h5_check(H5Dread(ds, H5T_NATIVE_FLOAT, memory, space, H5P_DEFAULT, out.data_ptr()), ctx);
  return true;
}

std::int64_t CheckpointReader::step(std::size_t parameter) const {
  const std::string name = state_dataset(parameter, "step");
  return file_->h5.has(name) ? read_tensor(file_->h5, name).item<std::int64_t>() : -1;
}

std::vector<std::pair<std::string, torch::Tensor>> checkpoint_state_dict(const CheckpointInfo& info) {
  H5File file = H5File::open_read_serial(info.path);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (std::size_t i = 0;; ++i) {
    const std::string name = parameter_dataset(i);
    if (!file.has(name)) break;
    out.emplace_back(file.read_string_attr(name, "name"), read_tensor(file, name));
  }
  for (std::size_t i = 0;; ++i) {
    const std::string first = rank_group(0) + "/buffers/" + index_name(i);
    if (!file.has(first)) break;
    torch::Tensor value = read_tensor(file, first);
    if (value.scalar_type() == torch::kFloat) {
      auto sum = value.to(torch::kDouble);
      for (std::int64_t r = 1; r < info.replicas; ++r) {
        sum += read_tensor(file, rank_group(r) + "/buffers/" + index_name(i)).to(torch::kDouble);
      }
      value = (sum / static_cast<double>(info.replicas)).to(torch::kFloat);
    }
    out.emplace_back(file.read_string_attr(first, "name"), value);
  }
  return out;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name.rfind("step_", 0) == 0 && name.size() > 3 && name.compare(name.size() - 3, 3, ".h5") == 0) {
        names.push_back(name);
      }
    }
    closedir(d);
  }
  // Zero-padded step numbers: the names sort by step.
  std::sort(names.rbegin(), names.rend());
  for (auto& n : names) n = dir + "/" + n;
  return names;
}

void prune_checkpoints(const std::string& dir, std::int64_t keep, const std::string& newest, bool verified) {
  try {
    verify_checkpoint(newest, !verified);
  } catch (const Error& e) {
    throw RuntimeFailure(std::string(e.what()) + ": it was just written and does not read back; older checkpoints in " +
                         dir + " are kept");
  }
  const std::string newest_name = newest.substr(newest.find_last_of('/') + 1);
  std::int64_t kept = 0;
  for (const auto& path : list_checkpoints(dir)) {
    if (path.substr(path.find_last_of('/') + 1) > newest_name) continue;  // newer steps: not ours to judge
    if (++kept <= std::max<std::int64_t>(keep, 1)) continue;
    remove_file(path);
  }
  sync_directory(dir);
}

}  // namespace hpctrain
