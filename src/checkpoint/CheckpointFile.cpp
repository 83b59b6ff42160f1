#include "checkpoint/CheckpointFile.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "util/Error.hpp"
#include "util/Json.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain::checkpoint_file {
namespace json = boost::json;
namespace {

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

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// The parts of each dataset in manifest order, each dataset's by first byte.
void sort_parts(std::vector<PartDigest>& parts, const std::map<std::string, std::size_t>& index) {
  std::sort(parts.begin(), parts.end(), [&](const PartDigest& a, const PartDigest& b) {
    const auto ia = index.at(a.dataset), ib = index.at(b.dataset);
    return ia != ib ? ia < ib : a.first_byte < b.first_byte;
  });
}

// Each dataset's parts cover [0, bytes) once, in order (`parts` sorted by sort_parts).
std::string coverage_error(const std::vector<PartDigest>& parts, const std::vector<std::string>& manifest,
                           const std::vector<std::int64_t>& bytes) {
  std::size_t k = 0;
  for (std::size_t d = 0; d < manifest.size(); ++d) {
    std::int64_t at = 0;
    for (; k < parts.size() && parts[k].dataset == manifest[d]; ++k) {
      if (parts[k].first_byte != at || parts[k].bytes <= 0) break;
      at += parts[k].bytes;
    }
    if (at != bytes[d] && !(bytes[d] == 0 && at == 0)) {
      return manifest[d] + ": its checksum parts cover " + std::to_string(at) + " of its " + std::to_string(bytes[d]) +
             " bytes";
    }
  }
  return k == parts.size() ? "" : "checksum part of " + parts[k].dataset + " out of place";
}

}  // namespace

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

torch::Tensor read_tensor(const H5File& file, const std::string& name) {
  const DatasetInfo info = dataset_info(file, name);
  const auto type = scalar_type(info.dtype, file.path() + ": " + name);
  auto t = torch::empty(info.shape, type);
  const std::string ctx = file.path() + ": reading " + name;
  H5Id ds(h5_check(H5Dopen2(file.id(), name.c_str(), H5P_DEFAULT), ctx));
  if (t.numel() > 0) h5_check(H5Dread(ds, memory_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), ctx);
  return t;
}

void read_into(const H5File& file, const std::string& name, const torch::Tensor& out) {
  const std::string ctx = file.path() + ": reading " + name;
  H5Id ds(h5_check(H5Dopen2(file.id(), name.c_str(), H5P_DEFAULT), ctx));
  if (out.numel() > 0) h5_check(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data_ptr()), ctx);
}

std::string read_text(const H5File& file, const std::string& name) {
  const auto t = read_tensor(file, name);
  return std::string(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel()));
}

std::string index_name(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%05zu", i);
  return buf;
}

std::string parameter_dataset(std::size_t i) {
  return "/model/parameters/" + index_name(i);
}

std::string state_dataset(std::size_t i, const std::string& key) {
  return "/optimizer/" + index_name(i) + "/" + key;
}

std::string rank_group(std::int64_t replica) {
  return "/ranks/" + std::to_string(replica);
}

// Where a rank's own state lives: /ranks/<replica> for the first stage (the layout of a
// data-parallel run), /ranks/<replica>/stages/<s> for the others.
std::string state_group(std::int64_t replica, std::int64_t stage) {
  const std::string base = rank_group(replica);
  return stage == 0 ? base : base + "/stages/" + std::to_string(stage);
}

std::string position_text(const LoopPosition& p) {
  return compact_json(json::object{{"epoch", p.epoch},
                                   {"step_in_epoch", p.step_in_epoch},
                                   {"step", p.step},
                                   {"best", std::isfinite(p.best) ? json::value(p.best) : nullptr},
                                   {"epochs_without_improvement", p.epochs_without_improvement},
                                   {"train_seconds", p.train_seconds},
                                   {"samples", p.samples},
                                   {"loss_scale", p.loss_scale},
                                   {"loss_scale_growth_tracker", p.loss_scale_growth_tracker},
                                   {"skipped_steps", p.skipped_steps},
                                   {"epochs", json::parse(p.epochs_json)}});
}

LoopPosition parse_position(const std::string& text) {
  const json::object o = json::parse(text).as_object();
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

PartDigest digest_part(const std::string& dataset, std::int64_t first_byte, const void* data, std::int64_t bytes) {
  PartDigest part;
  part.dataset = dataset;
  part.first_byte = first_byte;
  part.bytes = bytes;
  Sha256 hash;
  hash.update(data, static_cast<std::size_t>(bytes));
  part.sha256 = hash.digest();
  return part;
}

std::string parts_checksum(const std::vector<PartDigest>& parts) {
  Sha256 hash;
  for (const auto& p : parts) {
    hash.update(p.dataset.c_str(), p.dataset.size() + 1);  // with its terminating zero
    const auto first = static_cast<std::uint64_t>(p.first_byte), bytes = static_cast<std::uint64_t>(p.bytes);
    hash.update(&first, sizeof(first));  // little-endian hosts only (ParallelCheckpoint.cpp)
    hash.update(&bytes, sizeof(bytes));
    hash.update(p.sha256.data(), p.sha256.size());
  }
  return hash.hex_digest();
}

std::string pack_digests(const std::vector<PartDigest>& parts) {
  std::string out;
  for (const auto& p : parts) {
    put<std::uint32_t>(out, static_cast<std::uint32_t>(p.dataset.size()));
    out.append(p.dataset);
    put<std::int64_t>(out, p.first_byte);
    put<std::int64_t>(out, p.bytes);
    out.append(reinterpret_cast<const char*>(p.sha256.data()), p.sha256.size());
  }
  return out;
}

std::vector<PartDigest> unpack_digests(const std::string& bytes, const std::string& context) {
  std::vector<PartDigest> parts;
  std::size_t at = 0;
  auto take = [&](void* out, std::size_t n) {
    if (n > bytes.size() - at) throw RuntimeFailure(context + ": truncated checksum parts");
    std::memcpy(out, bytes.data() + at, n);
    at += n;
  };
  while (at < bytes.size()) {
    PartDigest p;
    std::uint32_t length = 0;
    take(&length, sizeof(length));
    p.dataset.resize(length);
    take(p.dataset.data(), length);
    take(&p.first_byte, sizeof(p.first_byte));
    take(&p.bytes, sizeof(p.bytes));
    take(p.sha256.data(), p.sha256.size());
    parts.push_back(std::move(p));
  }
  return parts;
}

void Writer::listed(const std::string& name, std::int64_t bytes) {
  datasets_[name] = {manifest_.size(), bytes};
  manifest_.push_back(name);
}

void Writer::tensor(const std::string& name, const torch::Tensor& value, const std::string& label) {
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
  const auto bytes = t.numel() * static_cast<std::int64_t>(t.element_size());
  listed(name, bytes);
  if (parts_) {
    if (bytes > 0) digests_.push_back(digest_part(name, 0, t.data_ptr(), bytes));
    return;
  }
  hash_.update(name.data(), name.size());
  hash_.update(t.data_ptr(), static_cast<std::size_t>(bytes));
}

void Writer::text(const std::string& name, const std::string& value) {
  tensor(name,
         torch::from_blob(const_cast<char*>(value.data()), {static_cast<std::int64_t>(value.size())}, torch::kByte)
             .clone());
}

std::int64_t Writer::reserve(H5Skeleton& skeleton, const std::string& name, const std::vector<std::int64_t>& shape,
                             const std::string& label) {
  if (!parts_) throw std::logic_error("checkpoint: reserved datasets need the version 2 checksum");
  const std::int64_t offset = skeleton.reserve(name, H5T_IEEE_F32LE, shape);
  if (!label.empty()) file_.write_string_attr(name, "name", label);
  std::int64_t elements = 1;
  for (auto d : shape) elements *= d;
  listed(name, elements * 4);
  return offset;
}

void Writer::add_parts(const std::vector<PartDigest>& parts) {
  digests_.insert(digests_.end(), parts.begin(), parts.end());
}

void Writer::finish() {
  file_.write_string_list("/manifest", manifest_);
  if (!parts_) {
    file_.write_string_attr("/", "sha256", hash_.hex_digest());
    return;
  }
  std::map<std::string, std::size_t> index;
  std::vector<std::int64_t> bytes;
  for (const auto& name : manifest_) {
    index[name] = datasets_.at(name).first;
    bytes.push_back(datasets_.at(name).second);
  }
  for (const auto& p : digests_) {
    if (!index.count(p.dataset)) throw RuntimeFailure(file_.path() + ": a checksum part of unknown " + p.dataset);
  }
  sort_parts(digests_, index);
  const std::string gap = coverage_error(digests_, manifest_, bytes);
  if (!gap.empty()) throw RuntimeFailure(file_.path() + ": " + gap);
  const auto k = static_cast<std::int64_t>(digests_.size());
  auto table = torch::empty({k, 3}, torch::kLong);
  auto sums = torch::empty({k, 32}, torch::kByte);
  for (std::int64_t i = 0; i < k; ++i) {
    const auto& p = digests_[static_cast<std::size_t>(i)];
    table[i][0] = static_cast<std::int64_t>(index.at(p.dataset));
    table[i][1] = p.first_byte;
    table[i][2] = p.bytes;
    std::memcpy(sums[i].data_ptr(), p.sha256.data(), 32);
  }
  Writer side(file_, false);  // the table is not in the manifest: the checksum covers it
  side.tensor("/checksum/parts", table);
  side.tensor("/checksum/sha256", sums);
  file_.write_string_attr("/", "sha256", parts_checksum(digests_));
}

void verify_parts(const H5File& file, const std::vector<std::string>& manifest, bool data) {
  const std::string& path = file.path();
  if (!file.has("/checksum/parts") || !file.has("/checksum/sha256")) {
    throw DataError(path + ": incomplete checkpoint (no checksum parts)");
  }
  const auto table = read_tensor(file, "/checksum/parts");
  const auto sums = read_tensor(file, "/checksum/sha256");
  if (table.dim() != 2 || table.size(1) != 3 || sums.dim() != 2 || sums.size(1) != 32 ||
      sums.size(0) != table.size(0)) {
    throw DataError(path + ": malformed checksum parts");
  }
  std::vector<PartDigest> parts;
  for (std::int64_t i = 0; i < table.size(0); ++i) {
    const auto d = table[i][0].item<std::int64_t>();
    if (d < 0 || d >= static_cast<std::int64_t>(manifest.size())) throw DataError(path + ": malformed checksum parts");
    PartDigest p;
    p.dataset = manifest[static_cast<std::size_t>(d)];
    p.first_byte = table[i][1].item<std::int64_t>();
    p.bytes = table[i][2].item<std::int64_t>();
    std::memcpy(p.sha256.data(), sums[i].data_ptr(), 32);
    parts.push_back(std::move(p));
  }
  std::vector<std::int64_t> bytes;
  std::size_t k = 0;
  for (const auto& name : manifest) {
    const DatasetInfo info = dataset_info(file, name);
    std::int64_t size = static_cast<std::int64_t>(info.element_size);
    for (auto d : info.shape) size *= d;
    bytes.push_back(size);
    if (!data) continue;
    const auto t = read_tensor(file, name);
    const auto* base = static_cast<const std::uint8_t*>(t.data_ptr());
    for (; k < parts.size() && parts[k].dataset == name; ++k) {
      const auto& p = parts[k];
      if (p.first_byte < 0 || p.bytes < 0 || p.first_byte + p.bytes > size) break;  // reported below
      if (digest_part(name, p.first_byte, base + p.first_byte, p.bytes).sha256 != p.sha256) {
        throw DataError(path + ": checksum mismatch in " + name + " (bytes " + std::to_string(p.first_byte) + " to " +
                        std::to_string(p.first_byte + p.bytes) + "): the checkpoint is corrupt");
      }
    }
  }
  const std::string gap = coverage_error(parts, manifest, bytes);
  if (!gap.empty()) throw DataError(path + ": " + gap + ": the checkpoint is corrupt");
  const std::string stored = file.read_string_attr("/", "sha256");
  if (parts_checksum(parts) != stored) {
    throw DataError(path + ": checksum mismatch (stored " + stored + ", computed " + parts_checksum(parts) +
                    "): the checkpoint is corrupt");
  }
}

CheckpointParts rank_parts(torch::nn::Module& model, const RankState& mine, const CheckpointLayout& layout) {
  CheckpointParts parts;
  parts["place"] = torch::tensor({std::int64_t{layout.stage}, std::int64_t{layout.replica}}, torch::kLong);
  const auto buffers = model.buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (layout.holds_buffer(i)) parts["b/" + index_name(i)] = buffers[i].detach();
  }
  parts["sums"] = torch::tensor({mine.epoch_loss, static_cast<double>(mine.epoch_correct)}, torch::kDouble);
  parts["rng"] = mine.rng;
  return parts;
}

GatheredParts::GatheredParts(CheckpointParts own, const std::vector<std::string>& bytes) {
  ranks_.resize(bytes.size());
  ranks_[0] = std::move(own);
  for (std::size_t r = 1; r < bytes.size(); ++r) {
    ranks_[r] = unpack_parts(bytes[r], "checkpoint: the part of rank " + std::to_string(r));
  }
}

const torch::Tensor* GatheredParts::find(const std::string& name, std::int64_t replica) const {
  for (const auto& parts : ranks_) {
    auto it = parts.find(name);
    if (it != parts.end() && parts.at("place")[1].item<std::int64_t>() == replica) return &it->second;
  }
  return nullptr;
}

const torch::Tensor& GatheredParts::at(const std::string& name, std::int64_t stage, std::int64_t replica) const {
  for (const auto& parts : ranks_) {
    const auto& place = parts.at("place");
    if (place[0].item<std::int64_t>() == stage && place[1].item<std::int64_t>() == replica) return parts.at(name);
  }
  throw RuntimeFailure("checkpoint: no rank sent stage " + std::to_string(stage) + " of replica " +
                       std::to_string(replica));
}

void write_attributes(H5File& file, std::int64_t version, std::int64_t step, std::int64_t world_size,
                      const CheckpointLayout& layout) {
  file.write_string_attr("/", "format", kCheckpointFormat);
  file.write_int_attr("/", "format_version", version);
  file.write_int_attr("/", "step", step);
  file.write_int_attr("/", "world_size", world_size);
  file.write_int_attr("/", "pipeline_stages", layout.stages);
  file.write_int_attr("/", "replicas", layout.replicas);
  file.write_string_attr("/", "created", utc_timestamp());
}

void write_replica_parts(Writer& w, const GatheredParts& all, torch::nn::Module& model,
                         const CheckpointLayout& layout) {
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

}  // namespace hpctrain::checkpoint_file
