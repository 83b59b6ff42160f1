#include "run/Export.hpp"

#include <torch/torch.h>

#include <string_view>
#include <utility>
#include <vector>

#include "checkpoint/Checkpoint.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

std::string safetensors_dtype(torch::ScalarType t) {
  if (t == torch::kFloat) return "F32";
  if (t == torch::kLong) return "I64";
  throw RuntimeFailure(std::string("export: cannot store tensors of type ") + c10::toString(t));
}

// safetensors: an 8-byte little-endian header length, the JSON header (padded with spaces
// to a multiple of 8), then the tensors' bytes, C order, little-endian.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const json::object& metadata) {
  json::object header;
  std::uint64_t offset = 0;
  std::vector<torch::Tensor> data;
  for (const auto& [name, value] : tensors) {
    const auto t = value.contiguous();
    json::array shape;
    for (auto d : t.sizes()) shape.push_back(d);
    const auto bytes = static_cast<std::uint64_t>(t.numel() * t.element_size());
    header[name] = json::object{{"dtype", safetensors_dtype(t.scalar_type())},
                                {"shape", shape},
                                {"data_offsets", json::array{offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  json::object meta;
  for (const auto& kv : metadata)
    meta[kv.key()] = kv.value().is_string() ? kv.value() : json::value(compact_json(kv.value()));
  header["__metadata__"] = meta;
  std::string text = compact_json(header);
  while (text.size() % 8 != 0) text += ' ';
  const std::uint64_t n = text.size();
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::vector<std::string_view> pieces{std::string_view(length, 8), text};
  for (const auto& t : data) {
    pieces.emplace_back(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel() * t.element_size()));
  }
  write_file_atomic(path, pieces);
}

}  // namespace

ExportResult export_model(const std::string& checkpoint_path, const std::string& out_dir) {
  const CheckpointInfo info = verify_checkpoint(checkpoint_path);
  const auto tensors = checkpoint_state_dict(info);
  make_directories(out_dir);
  ExportResult r;
  r.checkpoint = checkpoint_path;
  r.weights = out_dir + "/model.safetensors";
  r.description = out_dir + "/model.json";
  r.tensors = static_cast<std::int64_t>(tensors.size());
  json::object description = json::parse(info.model_json).as_object();
  json::array names;
  for (const auto& t : tensors) names.push_back(json::string(t.first));
  description["format"] = kModelFormat;
  description["format_version"] = kModelFormatVersion;
  description["checkpoint"] = checkpoint_path;
  description["step"] = info.step;
  description["tensors"] = names;
  write_safetensors(r.weights, tensors,
                    json::object{{"format", "pt"}, {"hpctrain", kModelFormat}, {"step", std::to_string(info.step)}});
  write_file_atomic(r.description, pretty_json(description));
  return r;
}

}  // namespace hpctrain
