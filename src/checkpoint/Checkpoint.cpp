#include "checkpoint/Checkpoint.hpp"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "checkpoint/CheckpointParts.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// File types of the tensors a checkpoint holds.
hid_t file_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return H5T_IEEE_F32LE;
    case torch::kDouble:
      return H5T_IEEE_F64LE;
    case torch::kLong:
      return H5T_STD_I64LE;
    case torch::kByte:
      return H5T_STD_U8LE;
    default:
      throw RuntimeFailure(std::string("checkpoint: cannot store tensors of type ") + c10::toString(t));
  }
}

hid_t memory_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return H5T_NATIVE_FLOAT;
    case torch::kDouble:
      return H5T_NATIVE_DOUBLE;
    case torch::kLong:
      return H5T_NATIVE_INT64;
    default:
      return H5T_NATIVE_UINT8;
  }
}

torch::ScalarType scalar_type(const std::string& dtype, const std::string& ctx) {
  if (dtype == "float32") return torch::kFloat;
  if (dtype == "float64") return torch::kDouble;
  if (dtype == "int64") return torch::kLong;
  if (dtype == "uint8") return torch::kByte;
  throw DataError(ctx + ": unexpected type " + dtype);
}

// Datasets go into the file and the hash in one order, listed in /manifest.
class Writer {
 public:
  explicit Writer(H5File& file) : file_(file) {}
  void tensor(const std::string& name, const torch::Tensor& value, const std::string& label = "") {
    const torch::Tensor t = value.detach().contiguous().cpu();
    const std::string ctx = file_.path() + ": writing " + name;
    std::vector<hsize_t> dims;
    for (auto d : t.sizes()) dims.push_back(static_cast<hsize_t>(d));
    H5Id space(h5_check(
        t.dim() == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
        ctx));
    H5Id lcpl(h5_check(H5Pcreate(H5P_LINK_CREATE), ctx));
    h5_check(H5Pset_create_intermediate_group(lcpl, 1), ctx);
    H5Id ds(h5_check(
        H5Dcreate2(file_.id(), name.c_str(), file_type(t.scalar_type()), space, lcpl, H5P_DEFAULT, H5P_DEFAULT), ctx));
    if (t.numel() > 0)
      h5_check(H5Dwrite(ds, memory_type(t.scalar_type()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), ctx);
    if (!label.empty()) file_.write_string_attr(name, "name", label);
    hash_.update(name.data(), name.size());
    hash_.update(t.data_ptr(), static_cast<std::size_t>(t.numel() * t.element_size()));
    manifest_.push_back(name);
  }
  void text(const std::string& name, const std::string& value) {
    tensor(name,
           torch::from_blob(const_cast<char*>(value.data()), {static_cast<std::int64_t>(value.size())}, torch::kByte)
               .clone());
  }
  void finish() {
    file_.write_string_list("/manifest", manifest_);
    file_.write_string_attr("/", "sha256", hash_.hex_digest());
  }

 private:
  H5File& file_;
  Sha256 hash_;
  std::vector<std::string> manifest_;
};

torch::Tensor read_tensor(const H5File& file, const std::string& name) {
  const DatasetInfo info = dataset_info(file, name);
  const auto type = scalar_type(info.dtype, file.path() + ": " + name);
  auto t = torch::empty(info.shape, type);
  const std::string ctx = file.path() + ": reading " + name;
  H5Id ds(h5_check(H5Dopen2(file.id(), name.c_str(), H5P_DEFAULT), ctx));
  if (t.numel() > 0) h5_check(H5Dread(ds, memory_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), ctx);
  return t;
}

std::string read_text(const H5File& file, const std::string& name) {
  const auto t = read_tensor(file, name);
  return std::string(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel()));
}

std::string rank_group(int rank) {
  return "/ranks/" + std::to_string(rank);
}

std::string index_name(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%05zu", i);
  return buf;
}

json::object position_to_json(const LoopPosition& p) {
  return json::object{{"epoch", p.epoch},
                      {"step_in_epoch", p.step_in_epoch},
                      {"step", p.step},
                      {"best", std::isfinite(p.best) ? json::value(p.best) : nullptr},
                      {"epochs_without_improvement", p.epochs_without_improvement},
                      {"train_seconds", p.train_seconds},
                      {"samples", p.samples},
                      {"loss_scale", p.loss_scale},
                      {"loss_scale_growth_tracker", p.loss_scale_growth_tracker},
                      {"skipped_steps", p.skipped_steps},
                      {"epochs", json::parse(p.epochs_json)}};
}

LoopPosition position_from_json(const json::object& o) {
  LoopPosition p;
  p.epoch = o.at("epoch").as_int64();
  p.step_in_epoch = o.at("step_in_epoch").as_int64();
  p.step = o.at("step").as_int64();
  p.best = o.at("best").is_null() ? std::numeric_limits<double>::infinity() : o.at("best").to_number<double>();
  p.epochs_without_improvement = o.at("epochs_without_improvement").as_int64();
  p.train_seconds = o.at("train_seconds").to_number<double>();
  p.samples = o.at("samples").as_int64();
  // Checkpoints written before mixed precision have no loss-scaler state.
  if (o.contains("loss_scale")) p.loss_scale = o.at("loss_scale").to_number<double>();
  if (o.contains("loss_scale_growth_tracker"))
    p.loss_scale_growth_tracker = o.at("loss_scale_growth_tracker").as_int64();
  if (o.contains("skipped_steps")) p.skipped_steps = o.at("skipped_steps").as_int64();
  p.epochs_json = compact_json(o.at("epochs"));
  return p;
}

// Where a rank's own state lives: /ranks/<replica> for the first stage (the layout of a
// data-parallel run), /ranks/<replica>/stages/<s> for the others.
std::string state_group(std::int64_t replica, std::int64_t stage) {
  const std::string base = rank_group(static_cast<int>(replica));
  return stage == 0 ? base : base + "/stages/" + std::to_string(stage);
}

// This rank's contribution: its stages' parameters and optimizer state when it is its
// stage's first replica, its buffers, sums and generator always.
CheckpointParts collect_parts(torch::nn::Module& model, torch::optim::Optimizer* optimizer, const RankState& mine,
                              const CheckpointLayout& layout) {
  CheckpointParts parts;
  parts["place"] = torch::tensor({std::int64_t{layout.stage}, std::int64_t{layout.replica}}, torch::kLong);
  if (layout.replica == 0) {
    if (optimizer == nullptr) throw std::logic_error("save_checkpoint: a first replica without optimizer state");
    const auto params = model.parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!layout.holds_parameter(i)) continue;
      parts["p/" + index_name(i)] = params[i].detach();
      for (const auto& [key, t] : optimizer_tensors(*optimizer, params[i])) parts["o/" + index_name(i) + "/" + key] = t;
    }
  }
  const auto buffers = model.buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (layout.holds_buffer(i)) parts["b/" + index_name(i)] = buffers[i].detach();
  }
  parts["sums"] = torch::tensor({mine.epoch_loss, static_cast<double>(mine.epoch_correct)}, torch::kDouble);
  parts["rng"] = mine.rng;
  return parts;
}

// Every rank's parts on the group's rank 0, indexed by the rank's place in the grid.
class GatheredParts {
 public:
  GatheredParts(CheckpointParts own, const std::vector<std::string>& bytes) {
    ranks_.resize(bytes.size());
    ranks_[0] = std::move(own);
    for (std::size_t r = 1; r < bytes.size(); ++r) {
      ranks_[r] = unpack_parts(bytes[r], "checkpoint: the part of rank " + std::to_string(r));
    }
  }
  // The part `name` from the first rank (in rank order) of `replica` that has it.
  const torch::Tensor* find(const std::string& name, std::int64_t replica) const {
    for (const auto& parts : ranks_) {
      auto it = parts.find(name);
      if (it != parts.end() && parts.at("place")[1].item<std::int64_t>() == replica) return &it->second;
    }
    return nullptr;
  }
  // The part `name` of the rank at (stage, replica).
  const torch::Tensor& at(const std::string& name, std::int64_t stage, std::int64_t replica) const {
    for (const auto& parts : ranks_) {
      const auto& place = parts.at("place");
      if (place[0].item<std::int64_t>() == stage && place[1].item<std::int64_t>() == replica) return parts.at(name);
    }
    throw RuntimeFailure("checkpoint: no rank sent stage " + std::to_string(stage) + " of replica " +
                         std::to_string(replica));
  }

 private:
  std::vector<CheckpointParts> ranks_;
};

void write_parts(Writer& w, const GatheredParts& all, torch::nn::Module& model, const CheckpointLayout& layout) {
  const auto params = model.named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor* t = all.find("p/" + index_name(i), 0);
    if (t == nullptr) throw RuntimeFailure("checkpoint: no stage sent parameter " + params[i].key());
    w.tensor("/model/parameters/" + index_name(i), *t, params[i].key());
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    for (const auto& key : optimizer_state_keys()) {
      if (const torch::Tensor* t = all.find("o/" + index_name(i) + "/" + key, 0)) {
        w.tensor("/optimizer/" + index_name(i) + "/" + key, *t);
      }
    }
  }
  // Per replica: buffers in module order, then each stage's epoch sums and generator state.
  const auto buffers = model.named_buffers();
  for (int d = 0; d < layout.replicas; ++d) {
    for (std::size_t i = 0; i < buffers.size(); ++i) {
      const torch::Tensor* t = all.find("b/" + index_name(i), d);
      if (t == nullptr) throw RuntimeFailure("checkpoint: no stage sent buffer " + buffers[i].key());
      w.tensor(rank_group(d) + "/buffers/" + index_name(i), *t, buffers[i].key());
    }
    for (int s = 0; s < layout.stages; ++s) {
      w.tensor(state_group(d, s) + "/epoch_sums", all.at("sums", s, d));
      w.tensor(state_group(d, s) + "/rng", all.at("rng", s, d));
    }
  }
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
    char created[32] = {0};
    const std::time_t now = std::time(nullptr);
    std::strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    file.write_string_attr("/", "format", kCheckpointFormat);
    file.write_int_attr("/", "format_version", kCheckpointVersion);
    file.write_int_attr("/", "step", position.step);
    file.write_int_attr("/", "world_size", group.size());
    file.write_int_attr("/", "pipeline_stages", layout.stages);
    file.write_int_attr("/", "replicas", layout.replicas);
    file.write_string_attr("/", "created", created);
    Writer w(file);
    w.text("/config_json", config_json);
    w.text("/model_json", model_json);
    w.text("/position_json", compact_json(position_to_json(position)));
    if (!layout.stage_split.empty()) {
      w.tensor("/pipeline/stage_split", torch::tensor(layout.stage_split, torch::kLong));
    }
    write_parts(w, all, model, layout);
    w.finish();
  });
}

CheckpointInfo verify_checkpoint(const std::string& path) {
  H5File file = H5File::open_read_serial(path);
  if (!file.has_attr("/", "format") || file.read_string_attr("/", "format") != kCheckpointFormat) {
    throw DataError(path + ": not an hpctrain checkpoint");
  }
  if (file.read_int_attr("/", "format_version") != kCheckpointVersion) {
    throw DataError(path + ": checkpoint format version " + std::to_string(file.read_int_attr("/", "format_version")) +
                    ", this hpctrain reads version " + std::to_string(kCheckpointVersion));
  }
  if (!file.has_attr("/", "sha256") || !file.has("/manifest")) {
    throw DataError(path + ": incomplete checkpoint (no checksum)");
  }
  Sha256 hash;
  for (const auto& name : file.read_string_list("/manifest")) {
    const auto t = read_tensor(file, name);
    hash.update(name.data(), name.size());
    hash.update(t.data_ptr(), static_cast<std::size_t>(t.numel() * t.element_size()));
  }
  const std::string stored = file.read_string_attr("/", "sha256");
  if (hash.hex_digest() != stored) {
    throw DataError(path + ": checksum mismatch (stored " + stored + ", computed " + hash.hex_digest() +
                    "): the checkpoint is corrupt");
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
  info.position = position_from_json(json::parse(read_text(file, "/position_json")).as_object());
  return info;
}

void restore_checkpoint(const CheckpointInfo& info, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                        RankState& mine, const CheckpointLayout& layout) {
  H5File file = H5File::open_read_serial(info.path);
  torch::NoGradGuard no_grad;
  const auto params = model.named_parameters();
  const std::string changed = " (was the model changed?)";
  const bool fewer = !params.is_empty() && !file.has("/model/parameters/" + index_name(params.size() - 1));
  if (fewer || file.has("/model/parameters/" + index_name(params.size()))) {
    throw ConfigError(info.path + ": the checkpoint holds another number of parameters than the model's " +
                      std::to_string(params.size()) + changed);
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!layout.holds_parameter(i)) continue;
    const std::string name = "/model/parameters/" + index_name(i);
    const std::string stored = file.read_string_attr(name, "name");
    if (stored != params[i].key()) {
      throw ConfigError(info.path + ": parameter " + std::to_string(i) + " is " + stored + " in the checkpoint, " +
                        params[i].key() + " in the model" + changed);
    }
    const auto t = read_tensor(file, name);
    if (t.sizes() != params[i].value().sizes()) {
      throw ConfigError(info.path + ": parameter " + params[i].key() + " has shape " + std::to_string(t.numel()) +
                        " elements in the checkpoint, the model " + std::to_string(params[i].value().numel()) +
                        changed);
    }
    params[i].value().copy_(t);
    std::map<std::string, torch::Tensor> values;
    for (const auto& key : optimizer_state_keys()) {
      const std::string state = "/optimizer/" + index_name(i) + "/" + key;
      // Optimizer state lives on the parameter's device.
      if (file.has(state)) values[key] = read_tensor(file, state).to(params[i].value().device());
    }
    set_optimizer_tensors(optimizer, params[i].value(), values, info.path);
  }
  // As many replicas: each its own statistics. Otherwise the first replica's.
  const std::int64_t source = info.replicas == layout.replicas ? layout.replica : 0;
  const auto buffers = model.named_buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (!layout.holds_buffer(i)) continue;
    buffers[i].value().copy_(read_tensor(file, rank_group(static_cast<int>(source)) + "/buffers/" + index_name(i)));
  }
  if (info.same_layout(layout)) {
    const std::string own = state_group(layout.replica, layout.stage);
    const auto sums = read_tensor(file, own + "/epoch_sums");
    mine.epoch_loss = sums[0].item<double>();
    mine.epoch_correct = static_cast<std::int64_t>(sums[1].item<double>());
    mine.rng = read_tensor(file, own + "/rng");
  }
}

std::vector<std::pair<std::string, torch::Tensor>> checkpoint_state_dict(const CheckpointInfo& info) {
  H5File file = H5File::open_read_serial(info.path);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (std::size_t i = 0;; ++i) {
    const std::string name = "/model/parameters/" + index_name(i);
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
        sum += read_tensor(file, rank_group(static_cast<int>(r)) + "/buffers/" + index_name(i)).to(torch::kDouble);
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

void prune_checkpoints(const std::string& dir, std::int64_t keep, const std::string& newest) {
  try {
    verify_checkpoint(newest);
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
