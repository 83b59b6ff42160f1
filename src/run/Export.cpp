#include "run/Export.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "checkpoint/Checkpoint.hpp"
#include "config/Schema.hpp"
#include "data/Sampling.hpp"
#include "eval/Metrics.hpp"
#include "eval/Scores.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "models/Model.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/SystemStats.hpp"

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

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open");
  unsigned char length[8];
  in.read(reinterpret_cast<char*>(length), 8);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | length[i];
  if (!in || n > (std::uint64_t(1) << 30)) throw DataError(path + ": not a safetensors file");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  const json::object header = parse_json_or_throw(text, path).as_object();
  const std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : header) {
    if (kv.key() == "__metadata__") continue;
    const auto& d = kv.value().as_object();
    std::vector<std::int64_t> shape;
    for (const auto& x : d.at("shape").as_array()) shape.push_back(x.to_number<std::int64_t>());
    const std::string dtype(d.at("dtype").as_string());
    const auto type = dtype == "F32" ? torch::kFloat : dtype == "I64" ? torch::kLong : torch::kByte;
    if (type == torch::kByte) throw DataError(path + ": " + std::string(kv.key()) + ": unsupported dtype " + dtype);
    const auto begin = d.at("data_offsets").as_array()[0].to_number<std::uint64_t>();
    const auto end = d.at("data_offsets").as_array()[1].to_number<std::uint64_t>();
    auto t = torch::empty(shape, type);
    if (end < begin || end > body.size() || end - begin != static_cast<std::uint64_t>(t.numel() * t.element_size())) {
      throw DataError(path + ": " + std::string(kv.key()) + ": data offsets do not match its shape");
    }
    std::memcpy(t.data_ptr(), body.data() + begin, end - begin);
    out[std::string(kv.key())] = t;
  }
  return out;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
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

namespace {

// Builds the model from model.json and loads model.safetensors into it (every rank; small files).
ModelPtr load_exported_model(const std::string& model_dir, const std::string& input, json::object& d) {
  d = parse_json_or_throw(read_text_file(model_dir + "/model.json"), model_dir + "/model.json").as_object();
  if (!d.contains("format") || d.at("format").as_string() != kModelFormat) {
    throw DataError(model_dir + "/model.json: not an hpctrain model description");
  }
  const std::string cfg = compact_json(json::object{{"data", json::object{{"path", input}}}, {"model", d.at("model")}});
  const Config c = parse_config(cfg, model_dir + "/model.json", {}).config;
  InputSpec spec;
  for (const auto& x : d.at("sample_shape").as_array()) spec.sample_shape.push_back(x.as_int64());
  spec.outputs = d.at("outputs").as_int64();
  ModelPtr model = build_model(c.model, spec);
  const auto weights = read_safetensors(model_dir + "/model.safetensors");
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    auto it = weights.find(p.key());
    if (it == weights.end()) throw DataError(model_dir + "/model.safetensors: no tensor " + p.key());
    p.value().copy_(it->second);
  }
  for (auto& b : model->named_buffers()) {
    auto it = weights.find(b.key());
    if (it == weights.end()) throw DataError(model_dir + "/model.safetensors: no tensor " + b.key());
    b.value().copy_(it->second);
  }
  model->eval();
  return model;
}

// This rank's block of a split, read collectively.
struct SplitBlock {
  torch::Tensor inputs, targets;
  Range rows;
};

SplitBlock read_split_block(const std::string& input, const std::string& split, const json::object& d,
                            const Communicator& comm) {
  SplitBlock block;
  H5File file = H5File::open_read(input, comm.raw());
  const DatasetMeta meta = read_dataset_meta(file);
  std::vector<std::int64_t> shape;
  for (const auto& x : d.at("sample_shape").as_array()) shape.push_back(x.as_int64());
  if (meta.sample_shape != shape) throw DataError(input + ": samples do not have the model's input shape");
  if (split != "train" && split != "test") throw UsageError("predict: --split is train or test");
  const std::int64_t n = split == "train" ? meta.train.count : meta.test.count;
  const Range rows = block_range(n, comm.size(), comm.rank());
  block.rows = rows;
  std::vector<std::int64_t> full{rows.size()};
  full.insert(full.end(), shape.begin(), shape.end());
  const bool floats = meta.float_inputs();
  block.inputs = torch::empty(full, floats ? torch::kFloat : torch::kUInt8);
  read_rows(file, meta.inputs_path(split), rows.begin, rows.size(), floats ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8,
            block.inputs.data_ptr());
  const bool labels = meta.task == Task::Classification;
  block.targets = meta.target_width > 1 ? torch::empty({rows.size(), meta.target_width}, torch::kFloat)
                                        : torch::empty({rows.size()}, labels ? torch::kInt32 : torch::kFloat);
  read_rows(file, meta.targets_path(split), rows.begin, rows.size(), labels ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT,
            block.targets.data_ptr());
  return block;
}

// What the model's outputs are, from its description.
struct OutputLayout {
  bool classification = false;
  std::int64_t k = 0;           // classes (classification)
  std::vector<double> levels;   // quantile levels (a quantile model)
  std::int64_t per_value = 1;   // outputs per target value: one, or one per level
  std::int64_t point = 0;       // the output read as the prediction: the level nearest the median
  std::int64_t width = 1;       // target values per sample (regression: S for targets [N, S])
  std::int64_t per_sample = 1;  // width * per_value
};

OutputLayout output_layout(const json::object& d) {
  OutputLayout l;
  l.classification = d.at("task").as_string() == "classification";
  l.k = l.classification ? d.at("outputs").as_int64() : 0;
  LossSpec quantiles;  // what the training loss said about the outputs
  if (d.contains("quantiles")) {
    for (const auto& x : d.at("quantiles").as_array()) quantiles.quantiles.push_back(x.to_number<double>());
  }
  if (!quantiles.quantiles.empty()) quantiles.kind = LossKind::Quantile;
  l.levels = quantiles.quantiles;
  l.per_value = quantiles.outputs_per_target();
  l.point = quantiles.point_column();
  l.width = l.classification ? 1 : d.at("outputs").as_int64() / l.per_value;
  l.per_sample = l.width * l.per_value;
  return l;
}

// Class probabilities, or predictions in the original units, of this rank's rows.
std::vector<double> predict_block(ModelImpl& model, const json::object& d, const SplitBlock& block,
                                  const OutputLayout& l, std::int64_t batch) {
  std::vector<float> mean, inv_std;
  for (const auto& x : d.at("normalization").as_object().at("mean").as_array()) mean.push_back(x.to_number<float>());
  for (const auto& x : d.at("normalization").as_object().at("std").as_array())
    inv_std.push_back(1.0f / x.to_number<float>());
  std::vector<std::int64_t> view(d.at("sample_shape").as_array().size() + 1, 1);
  view[1] = static_cast<std::int64_t>(mean.size());
  const auto mean_t = torch::tensor(mean).view(view), inv_t = torch::tensor(inv_std).view(view);
  const double target_mean = d.at("target").as_object().at("mean").to_number<double>();
  const double target_std = d.at("target").as_object().at("std").to_number<double>();
  std::vector<double> outputs;
  torch::NoGradGuard no_grad;
  for (std::int64_t b = 0; b < block.rows.size(); b += batch) {
    const std::int64_t len = std::min(batch, block.rows.size() - b);
    auto x = block.inputs.narrow(0, b, len).to(torch::kFloat, false, true).sub_(mean_t).mul_(inv_t);
    auto out = model.forward(x).to(torch::kDouble);
    out = l.classification ? torch::softmax(out, 1) : out.reshape({len, l.per_sample}) * target_std + target_mean;
    out = out.contiguous();
    outputs.insert(outputs.end(), out.data_ptr<double>(), out.data_ptr<double>() + out.numel());
  }
  return outputs;
}

// Rank 0's gathered predictions of the whole split.
struct Predictions {
  std::int64_t n = 0;
  std::vector<double> outputs, targets, prediction;  // prediction: the class, or the point per target value
};

void write_predictions_csv(const std::string& path, const OutputLayout& l, const Predictions& p) {
  std::ostringstream csv;
  csv.precision(17);
  // Several target values per sample: one column each, suffixed with the step (1..S).
  auto suffix = [&](std::int64_t s) { return l.width > 1 ? "_" + std::to_string(s + 1) : std::string(); };
  csv << "index";
  if (l.classification) {
    csv << ",label,prediction";
  } else {
    for (std::int64_t s = 0; s < l.width; ++s) csv << ",target" << suffix(s);
    for (std::int64_t s = 0; s < l.width; ++s) csv << ",prediction" << suffix(s);
  }
  for (std::int64_t c = 0; c < l.k; ++c) csv << ",score_" << c;
  for (std::int64_t s = 0; s < l.width; ++s) {
    for (double level : l.levels) csv << ",q" << std::llround(level * 100) << suffix(s);
  }
  csv << "\n";
  for (std::int64_t i = 0; i < p.n; ++i) {
    const auto u = static_cast<std::size_t>(i);
    csv << i << ",";
    if (l.classification) {
      csv << static_cast<std::int64_t>(p.targets[u]) << "," << static_cast<std::int64_t>(p.prediction[u]);
      for (std::int64_t c = 0; c < l.k; ++c) csv << "," << p.outputs[static_cast<std::size_t>(i * l.k + c)];
    } else {
      for (std::int64_t s = 0; s < l.width; ++s) csv << (s > 0 ? "," : "") << p.targets[u * l.width + s];
      for (std::int64_t s = 0; s < l.width; ++s) csv << "," << p.prediction[u * l.width + s];
      if (!l.levels.empty()) {
        for (std::int64_t j = 0; j < l.per_sample; ++j)
          csv << "," << p.outputs[static_cast<std::size_t>(i * l.per_sample + j)];
      }
    }
    csv << "\n";
  }
  write_file_atomic(path, csv.str());
}

void write_predictions_h5(const std::string& path, const std::string& model_dir, const std::string& input_name,
                          const OutputLayout& l, const Predictions& p) {
  write_hdf5_atomically(path, [&](H5File& out) {
    const std::string& tmp = out.path();
    out.write_string_attr("/", "format", "hpctrain-predictions");
    out.write_int_attr("/", "format_version", 1);
    out.write_string_attr("/", "model", model_dir);
    out.write_string_attr("/", "input", input_name);
    auto write = [&](const std::string& name, hid_t type, std::vector<hsize_t> dims, const void* data) {
      H5Id space(h5_check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), tmp));
      H5Id ds(h5_check(H5Dcreate2(out.id(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), tmp));
      h5_check(H5Dwrite(ds, type == H5T_STD_I64LE ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                        data),
               tmp);
    };
    const auto un = static_cast<hsize_t>(p.n);
    std::vector<std::int64_t> index(static_cast<std::size_t>(p.n));
    for (std::int64_t i = 0; i < p.n; ++i) index[static_cast<std::size_t>(i)] = i;
    write("/index", H5T_STD_I64LE, {un}, index.data());
    if (l.classification) {
      std::vector<std::int64_t> cls(p.prediction.begin(), p.prediction.end()), lab(p.targets.begin(), p.targets.end());
      write("/prediction", H5T_STD_I64LE, {un}, cls.data());
      write("/label", H5T_STD_I64LE, {un}, lab.data());
      write("/scores", H5T_IEEE_F64LE, {un, static_cast<hsize_t>(l.k)}, p.outputs.data());
    } else {
      // [n] for one target value per sample, [n, S] for S.
      std::vector<hsize_t> dims{un};
      if (l.width > 1) dims.push_back(static_cast<hsize_t>(l.width));
      write("/prediction", H5T_IEEE_F64LE, dims, p.prediction.data());
      write("/target", H5T_IEEE_F64LE, dims, p.targets.data());
      if (!l.levels.empty()) {
        dims.push_back(static_cast<hsize_t>(l.levels.size()));
        write("/quantiles", H5T_IEEE_F64LE, dims, p.outputs.data());
        write("/quantile_levels", H5T_IEEE_F64LE, {static_cast<hsize_t>(l.levels.size())}, l.levels.data());
      }
    }
  });
}

}  // namespace

PredictResult predict_file(const std::string& model_dir, const std::string& input, const std::string& split,
                           const std::string& prefix, std::int64_t batch, const Communicator& comm) {
  const double start = wall_seconds();
  json::object d;
  ModelPtr model;
  collective_check(comm, [&] { model = load_exported_model(model_dir, input, d); });
  SplitBlock block;
  collective_check(comm, [&] { block = read_split_block(input, split, d, comm); });

  const OutputLayout l = output_layout(d);
  const std::vector<double> outputs = predict_block(*model, d, block, l, batch);
  const auto t = block.targets.to(torch::kDouble).contiguous();
  if (!l.classification && t.numel() != block.rows.size() * l.width) {
    throw DataError(input + ": " + std::to_string(t.numel() / std::max<std::int64_t>(1, block.rows.size())) +
                    " target values per sample, the model predicts " + std::to_string(l.width));
  }
  Predictions p;
  p.outputs = comm.gatherv(outputs, 0);
  p.targets = comm.gatherv(std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel()), 0);
  PredictResult r;
  r.h5 = prefix + ".h5";
  r.csv = prefix + ".csv";
  r.samples = static_cast<std::int64_t>(p.targets.size()) / l.width;
  p.n = r.samples;
  collective_check(comm, [&] {
    if (comm.rank() != 0) return;
    p.prediction.assign(static_cast<std::size_t>(p.n * l.width), 0.0);
    const auto classes = l.classification ? predicted_classes(p.outputs, l.k) : std::vector<std::int64_t>();
    for (std::int64_t i = 0; i < p.n; ++i) {
      if (l.classification) {
        p.prediction[static_cast<std::size_t>(i)] = static_cast<double>(classes[static_cast<std::size_t>(i)]);
        continue;
      }
      for (std::int64_t s = 0; s < l.width; ++s) {
        p.prediction[static_cast<std::size_t>(i * l.width + s)] =
            p.outputs[static_cast<std::size_t>(i * l.per_sample + s * l.per_value + l.point)];
      }
    }
    write_predictions_csv(r.csv, l, p);
    write_predictions_h5(r.h5, model_dir, input + ":" + split, l, p);
  });
  r.seconds = wall_seconds() - start;
  return r;
}

}  // namespace hpctrain
