#include "checkpoint/Checkpoint.hpp"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

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

// Optimizer state of one parameter as named tensors (empty before its first step).
std::vector<std::pair<std::string, torch::Tensor>> optimizer_tensors(torch::optim::Optimizer& optimizer,
                                                                     const torch::Tensor& p) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto& state = optimizer.state();
  auto it = state.find(p.unsafeGetTensorImpl());
  if (it == state.end()) return out;
  if (auto* s = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
    out.emplace_back("momentum_buffer", s->momentum_buffer());
  } else if (auto* a = dynamic_cast<torch::optim::AdamParamState*>(it->second.get())) {
    out.emplace_back("step", torch::tensor({a->step()}, torch::kLong));
    out.emplace_back("exp_avg", a->exp_avg());
    out.emplace_back("exp_avg_sq", a->exp_avg_sq());
    if (a->max_exp_avg_sq().defined()) out.emplace_back("max_exp_avg_sq", a->max_exp_avg_sq());
  } else if (auto* w = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get())) {
    out.emplace_back("step", torch::tensor({w->step()}, torch::kLong));
    out.emplace_back("exp_avg", w->exp_avg());
    out.emplace_back("exp_avg_sq", w->exp_avg_sq());
    if (w->max_exp_avg_sq().defined()) out.emplace_back("max_exp_avg_sq", w->max_exp_avg_sq());
  } else {
    throw RuntimeFailure("checkpoint: unsupported optimizer state");
  }
  return out;
}

void set_optimizer_tensors(torch::optim::Optimizer& optimizer, const torch::Tensor& p,
                           const std::map<std::string, torch::Tensor>& values, const std::string& ctx) {
  auto& state = optimizer.state();
  if (values.empty()) {
    state.erase(p.unsafeGetTensorImpl());
    return;
  }
  auto get = [&](const std::string& key) {
    auto it = values.find(key);
    if (it == values.end()) throw DataError(ctx + ": optimizer state lacks " + key);
    return it->second;
  };
  auto max_sq = [&]() {
    auto it = values.find("max_exp_avg_sq");
    return it == values.end() ? torch::Tensor() : it->second;
  };
  if (dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr) {
    auto s = std::make_unique<torch::optim::SGDParamState>();
    s->momentum_buffer(get("momentum_buffer"));
    state[p.unsafeGetTensorImpl()] = std::move(s);
  } else if (dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr) {
    auto s = std::make_unique<torch::optim::AdamParamState>();
    s->step(get("step").item<std::int64_t>());
    s->exp_avg(get("exp_avg"));
    s->exp_avg_sq(get("exp_avg_sq"));
    if (max_sq().defined()) s->max_exp_avg_sq(max_sq());
    state[p.unsafeGetTensorImpl()] = std::move(s);
  } else if (dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr) {
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(get("step").item<std::int64_t>());
    s->exp_avg(get("exp_avg"));
    s->exp_avg_sq(get("exp_avg_sq"));
    if (max_sq().defined()) s->max_exp_avg_sq(max_sq());
    state[p.unsafeGetTensorImpl()] = std::move(s);
  } else {
    throw RuntimeFailure("checkpoint: unsupported optimizer");
  }
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

// Every buffer and this rank's RankState, flattened to doubles for one gather (float32,
// int64 counters below 2^53 and bytes are exact in a double).
std::vector<double> flatten_rank(torch::nn::Module& model, const RankState& mine) {
  std::vector<double> out;
  for (const auto& b : model.buffers()) {
    auto d = b.detach().to(torch::kCPU, torch::kDouble).contiguous().reshape({-1});
    out.insert(out.end(), d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
  }
  out.push_back(mine.epoch_loss);
  out.push_back(static_cast<double>(mine.epoch_correct));
  const auto rng = mine.rng.contiguous();
  const auto* bytes = rng.data_ptr<std::uint8_t>();
  out.push_back(static_cast<double>(rng.numel()));
  for (std::int64_t i = 0; i < rng.numel(); ++i) out.push_back(bytes[i]);
  return out;
}

}  // namespace

std::string checkpoint_file_name(std::int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "step_%010lld.h5", static_cast<long long>(step));
  return buf;
}

void save_checkpoint(const std::string& path, const std::string& config_json, const std::string& model_json,
                     const LoopPosition& position, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                     const RankState& mine, const Communicator& comm) {
  const std::vector<double> local = flatten_rank(model, mine);
  const std::vector<double> all = comm.gatherv(local, 0);
  if (comm.rank() != 0) return;
  write_hdf5_atomically(path, [&](H5File& file) {
    char created[32] = {0};
    const std::time_t now = std::time(nullptr);
    std::strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    file.write_string_attr("/", "format", kCheckpointFormat);
    file.write_int_attr("/", "format_version", kCheckpointVersion);
    file.write_int_attr("/", "step", position.step);
    file.write_int_attr("/", "world_size", comm.size());
    file.write_string_attr("/", "created", created);
    Writer w(file);
    w.text("/config_json", config_json);
    w.text("/model_json", model_json);
    w.text("/position_json", compact_json(position_to_json(position)));
    const auto params = model.named_parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      w.tensor("/model/parameters/" + index_name(i), params[i].value(), params[i].key());
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      for (const auto& [key, t] : optimizer_tensors(optimizer, params[i].value())) {
        w.tensor("/optimizer/" + index_name(i) + "/" + key, t);
      }
    }
    // Per rank: buffers in module order, then the epoch sums and the generator state.
    const auto buffers = model.named_buffers();
    std::size_t offset = 0;
    for (int r = 0; r < comm.size(); ++r) {
      for (std::size_t i = 0; i < buffers.size(); ++i) {
        const auto& b = buffers[i].value();
        auto t =
            torch::from_blob(const_cast<double*>(all.data() + offset), b.sizes(), torch::kDouble).to(b.scalar_type());
        offset += static_cast<std::size_t>(b.numel());
        w.tensor(rank_group(r) + "/buffers/" + index_name(i), t, buffers[i].key());
      }
      w.tensor(rank_group(r) + "/epoch_sums", torch::tensor({all[offset], all[offset + 1]}, torch::kDouble));
      const auto n = static_cast<std::int64_t>(all[offset + 2]);
      offset += 3;
      auto rng = torch::empty({n}, torch::kByte);
      for (std::int64_t k = 0; k < n; ++k)
        rng[k] = static_cast<std::uint8_t>(all[offset + static_cast<std::size_t>(k)]);
      offset += static_cast<std::size_t>(n);
      w.tensor(rank_group(r) + "/rng", rng);
    }
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
  info.config_json = read_text(file, "/config_json");
  info.model_json = read_text(file, "/model_json");
  info.position = position_from_json(json::parse(read_text(file, "/position_json")).as_object());
  return info;
}

void restore_checkpoint(const CheckpointInfo& info, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                        RankState& mine, const Communicator& comm) {
  H5File file = H5File::open_read_serial(info.path);
  torch::NoGradGuard no_grad;
  const auto params = model.named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string name = "/model/parameters/" + index_name(i);
    const auto t = read_tensor(file, name);
    if (t.sizes() != params[i].value().sizes()) {
      throw ConfigError(info.path + ": parameter " + params[i].key() + " has shape " + std::to_string(t.numel()) +
                        " elements in the checkpoint, the model " + std::to_string(params[i].value().numel()) +
                        " (was the model changed?)");
    }
    params[i].value().copy_(t);
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::map<std::string, torch::Tensor> values;
    for (const std::string key : {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"}) {
      const std::string name = "/optimizer/" + index_name(i) + "/" + key;
      // Optimizer state lives on the parameter's device.
      if (file.has(name)) values[key] = read_tensor(file, name).to(params[i].value().device());
    }
    set_optimizer_tensors(optimizer, params[i].value(), values, info.path);
  }
  // Same world size: every rank its own part (exact). Otherwise rank 0's statistics.
  const int source = info.world_size == comm.size() ? comm.rank() : 0;
  const auto buffers = model.named_buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    buffers[i].value().copy_(read_tensor(file, rank_group(source) + "/buffers/" + index_name(i)));
  }
  if (source == comm.rank()) {
    const auto sums = read_tensor(file, rank_group(source) + "/epoch_sums");
    mine.epoch_loss = sums[0].item<double>();
    mine.epoch_correct = static_cast<std::int64_t>(sums[1].item<double>());
    mine.rng = read_tensor(file, rank_group(source) + "/rng");
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
      for (std::int64_t r = 1; r < info.world_size; ++r) {
        sum += read_tensor(file, rank_group(static_cast<int>(r)) + "/buffers/" + index_name(i)).to(torch::kDouble);
      }
      value = (sum / static_cast<double>(info.world_size)).to(torch::kFloat);
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
