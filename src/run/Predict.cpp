#include "run/Predict.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "comm/ProcessGrid.hpp"
#include "config/Schema.hpp"
#include "data/Sampling.hpp"
#include "eval/Metrics.hpp"
#include "eval/Scores.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "models/Model.hpp"
#include "run/Export.hpp"
#include "train/Pipeline.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"
#include "util/SystemStats.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// Microbatches of --batch rows per pass through a pipeline, per stage: stage 0 runs at most
// this many ahead of the last, which bounds the activations in flight; the fill and drain
// cost (p - 1) / (kWindow * p + p - 1) of the pass.
constexpr int kWindow = 8;

// The tensors of a safetensors file that `wanted` names, each read from its own offsets:
// a pipeline stage reads only its pieces' bytes.
std::map<std::string, torch::Tensor> read_safetensors(const std::string& path,
                                                      const std::function<bool(const std::string&)>& wanted) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path + ": cannot open");
  unsigned char length[8];
  in.read(reinterpret_cast<char*>(length), 8);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | length[i];
  if (!in || n > (std::uint64_t(1) << 30)) throw DataError(path + ": not a safetensors file");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) throw DataError(path + ": the header is cut short");
  const json::object header = parse_json_or_throw(text, path).as_object();
  in.seekg(0, std::ios::end);
  const auto body = static_cast<std::uint64_t>(in.tellg()) - 8 - n;
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : header) {
    if (kv.key() == "__metadata__" || !wanted(std::string(kv.key()))) continue;
    const std::string name(kv.key());
    const auto& d = kv.value().as_object();
    std::vector<std::int64_t> shape;
    for (const auto& x : d.at("shape").as_array()) shape.push_back(x.to_number<std::int64_t>());
    const std::string dtype(d.at("dtype").as_string());
    const auto type = dtype == "F32" ? torch::kFloat : dtype == "I64" ? torch::kLong : torch::kByte;
    if (type == torch::kByte) throw DataError(path + ": " + name + ": unsupported dtype " + dtype);
    const auto begin = d.at("data_offsets").as_array()[0].to_number<std::uint64_t>();
    const auto end = d.at("data_offsets").as_array()[1].to_number<std::uint64_t>();
    auto t = torch::empty(shape, type);
    if (end < begin || end > body || end - begin != static_cast<std::uint64_t>(t.numel() * t.element_size())) {
      throw DataError(path + ": " + name + ": data offsets do not match its shape");
    }
    in.clear();
    in.seekg(static_cast<std::streamoff>(8 + n + begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(end - begin));
    if (!in) throw DataError(path + ": " + name + ": cannot read its bytes");
    out[name] = t;
  }
  return out;
}

json::object read_description(const std::string& model_dir) {
  const std::string path = model_dir + "/model.json";
  std::string text;
  try {
    text = read_file(path);
  } catch (const RuntimeFailure& e) {
    throw DataError(e.what());  // a missing or unreadable export is bad input
  }
  json::object d = parse_json_or_throw(text, path).as_object();
  if (!d.contains("format") || d.at("format").as_string() != kModelFormat) {
    throw DataError(model_dir + "/model.json: not an hpctrain model description");
  }
  return d;
}

// The model model.json describes, as built from its seed (weights loaded by load_weights).
ModelPtr build_exported_model(const json::object& d, const std::string& model_dir, const std::string& input) {
  const std::string cfg = compact_json(json::object{{"data", json::object{{"path", input}}}, {"model", d.at("model")}});
  const Config c = parse_config(cfg, model_dir + "/model.json", {}).config;
  InputSpec spec;
  for (const auto& x : d.at("sample_shape").as_array()) spec.sample_shape.push_back(x.as_int64());
  spec.outputs = d.at("outputs").as_int64();
  return build_model(c.model, spec);
}

// Loads model.safetensors into the parameters and buffers of the pieces this rank runs:
// every piece without a pipeline (`engine` null).
void load_weights(ModelImpl& model, const std::string& model_dir, const PipelineEngine* engine) {
  const std::string path = model_dir + "/model.safetensors";
  auto keep = [&](const std::string& name) { return engine == nullptr || engine->runs_piece(model.piece_of(name)); };
  const auto weights = read_safetensors(path, keep);
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, torch::Tensor& value) {
    if (!keep(name)) return;
    auto it = weights.find(name);
    if (it == weights.end()) throw DataError(path + ": no tensor " + name);
    if (it->second.sizes() != value.sizes())
      throw DataError(path + ": " + name + " has another shape than the model's");
    value.copy_(it->second);
  };
  for (auto& p : model.named_parameters()) load(p.key(), p.value());
  for (auto& b : model.named_buffers()) load(b.key(), b.value());
  model.eval();
}

// This rank's rows of a split, read collectively: the inputs where `inputs`, the targets
// where `targets` (a pipeline's first and last stages), none elsewhere.
struct SplitBlock {
  torch::Tensor inputs, targets;
  Range rows;
};

SplitBlock read_split_block(const PredictOptions& o, const json::object& d, const Communicator& comm, int replicas,
                            int replica, bool inputs, bool targets) {
  SplitBlock block;
  H5File file = H5File::open_read(o.input, comm.raw());
  const DatasetMeta meta = read_dataset_meta(file);
  std::vector<std::int64_t> shape;
  for (const auto& x : d.at("sample_shape").as_array()) shape.push_back(x.as_int64());
  if (meta.sample_shape != shape) throw DataError(o.input + ": samples do not have the model's input shape");
  if (o.split != "train" && o.split != "test") throw UsageError("predict: --split is train or test");
  const std::int64_t n = o.split == "train" ? meta.train.count : meta.test.count;
  block.rows = block_range(n, replicas, replica);
  const std::int64_t in_rows = inputs ? block.rows.size() : 0, target_rows = targets ? block.rows.size() : 0;
  std::vector<std::int64_t> full{in_rows};
  full.insert(full.end(), shape.begin(), shape.end());
  const bool floats = meta.float_inputs();
  block.inputs = torch::empty(full, floats ? torch::kFloat : torch::kUInt8);
  read_rows(file, meta.inputs_path(o.split), block.rows.begin, in_rows, floats ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8,
            block.inputs.data_ptr());
  const bool labels = meta.task == Task::Classification;
  block.targets = meta.target_width > 1 ? torch::empty({target_rows, meta.target_width}, torch::kFloat)
                                        : torch::empty({target_rows}, labels ? torch::kInt32 : torch::kFloat);
  read_rows(file, meta.targets_path(o.split), block.rows.begin, target_rows,
            labels ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT, block.targets.data_ptr());
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

// The model's inputs as training normalized them, and its outputs as predictions.
struct Scaling {
  torch::Tensor mean, inv_std;  // per channel, shaped to broadcast over [n, C, ...]
  double target_mean = 0, target_std = 1;
};

Scaling scaling_of(const json::object& d) {
  std::vector<float> mean, inv_std;
  for (const auto& x : d.at("normalization").as_object().at("mean").as_array()) mean.push_back(x.to_number<float>());
  for (const auto& x : d.at("normalization").as_object().at("std").as_array())
    inv_std.push_back(1.0f / x.to_number<float>());
  std::vector<std::int64_t> view(d.at("sample_shape").as_array().size() + 1, 1);
  view[1] = static_cast<std::int64_t>(mean.size());
  Scaling s;
  s.mean = torch::tensor(mean).view(view);
  s.inv_std = torch::tensor(inv_std).view(view);
  s.target_mean = d.at("target").as_object().at("mean").to_number<double>();
  s.target_std = d.at("target").as_object().at("std").to_number<double>();
  return s;
}

torch::Tensor normalized(const torch::Tensor& rows, const Scaling& s) {
  return rows.to(torch::kFloat, false, true).sub_(s.mean).mul_(s.inv_std);
}

// Class probabilities, or predictions in the original units, appended to `outputs`.
void append_outputs(const torch::Tensor& model_out, const OutputLayout& l, const Scaling& s,
                    std::vector<double>& outputs) {
  auto out = model_out.to(torch::kDouble);
  const std::int64_t len = out.size(0);
  out = l.classification ? torch::softmax(out, 1) : out.reshape({len, l.per_sample}) * s.target_std + s.target_mean;
  out = out.contiguous();
  outputs.insert(outputs.end(), out.data_ptr<double>(), out.data_ptr<double>() + out.numel());
}

// This rank's rows through the whole model, --batch rows per forward.
std::vector<double> predict_block(ModelImpl& model, const SplitBlock& block, const OutputLayout& l, const Scaling& s,
                                  std::int64_t batch) {
  std::vector<double> outputs;
  torch::NoGradGuard no_grad;
  for (std::int64_t b = 0; b < block.rows.size(); b += batch) {
    const std::int64_t len = std::min(batch, block.rows.size() - b);
    append_outputs(model.forward(normalized(block.inputs.narrow(0, b, len), s)), l, s, outputs);
  }
  return outputs;
}

// The replica's rows through its pipeline, kWindow microbatches of --batch rows per pass:
// the first stage feeds the inputs, the last collects the outputs (empty elsewhere).
std::vector<double> predict_pipelined(PipelineEngine& engine, const ProcessGrid& grid, const SplitBlock& block,
                                      const OutputLayout& l, const Scaling& s, std::int64_t batch) {
  std::vector<double> outputs;
  const std::int64_t window = batch * kWindow;
  for (std::int64_t b = 0; b < block.rows.size(); b += window) {
    const std::int64_t len = std::min(window, block.rows.size() - b);
    // Only the first stage reads rows; the others need the count.
    const torch::Tensor x = grid.first_stage() ? normalized(block.inputs.narrow(0, b, len), s) : torch::empty({len, 0});
    const torch::Tensor out = engine.forward(x);
    if (grid.last_stage()) append_outputs(out, l, s, outputs);
  }
  return outputs;
}

// The names this command's options have, in a ConfigError raised for the keys they set.
UsageError as_option_error(const ConfigError& e) {
  std::string text = e.what();
  for (const auto& [key, option] : {std::pair<std::string, std::string>{"parallel.stage_split", "--stage-split"},
                                    {"parallel.pipeline_stages", "--stages"}}) {
    for (auto at = text.find(key); at != std::string::npos; at = text.find(key, at + option.size()))
      text.replace(at, key.size(), option);
  }
  return UsageError("predict: " + text);
}

// The stages' plan, or a UsageError naming the option that cannot be met. Every rank
// computes the same one (parameter counts, no measurement).
StagePlan predict_plan(const PredictOptions& o, ModelImpl& model, const std::string& name, int ranks) {
  if (o.stages < 1) throw UsageError("predict: --stages must be at least 1 (got " + std::to_string(o.stages) + ")");
  if (!o.stage_split.empty() && o.stages == 1) throw UsageError("predict: --stage-split needs --stages of 2 or more");
  if (ranks % o.stages != 0) {
    throw UsageError("predict: --stages " + std::to_string(o.stages) + " does not divide the " + std::to_string(ranks) +
                     " ranks; the ranks form stages x replicas, so launch a multiple of " + std::to_string(o.stages) +
                     " ranks");
  }
  const std::int64_t blocks = model.pipeline_blocks();
  if (o.stages > 1 && blocks == 0) {
    throw UsageError("predict: --stages: model " + name +
                     " is not a chain of blocks a pipeline can split (mlp, cnn, resnet and transformer are)");
  }
  if (o.stages == 1) return StagePlan{};
  const auto counts = piece_parameter_counts(model);
  std::vector<double> costs(counts.begin() + 1, counts.end() - 1);
  costs.front() += static_cast<double>(counts.front());
  costs.back() += static_cast<double>(counts.back());
  try {
    return make_stage_plan(ScheduleKind::GPipe, PipelineShape{o.stages, kWindow, 1}, blocks, o.stage_split, costs);
  } catch (const ConfigError& e) {
    throw as_option_error(e);
  }
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

PredictResult predict_file(const PredictOptions& o, const Communicator& comm) {
  const double start = wall_seconds();
  json::object d;
  ModelPtr model;
  StagePlan plan;
  collective_check(comm, [&] {
    d = read_description(o.model_dir);
    model = build_exported_model(d, o.model_dir, o.input);
    plan = predict_plan(o, *model, std::string(d.at("model").as_object().at("name").as_string()), comm.size());
  });
  PredictResult r;
  r.stages = o.stages;
  r.replicas = comm.size() / o.stages;
  std::unique_ptr<ProcessGrid> grid;
  std::unique_ptr<PipelineEngine> engine;
  if (o.stages > 1) {
    grid = std::make_unique<ProcessGrid>(comm, o.stages, GridOrder::ReplicasInner, "the ranks");
    std::vector<std::int64_t> sample;
    for (const auto& x : d.at("sample_shape").as_array()) sample.push_back(x.as_int64());
    engine = std::make_unique<PipelineEngine>(*model, *grid, plan, torch::kCPU, sample, "fp32", false);
    engine->drop_other_pieces();
    r.split_described = plan.describe();
  }
  collective_check(comm, [&] { load_weights(*model, o.model_dir, engine.get()); });
  const bool first = !grid || grid->first_stage(), last = !grid || grid->last_stage();
  SplitBlock block;
  collective_check(comm, [&] {
    block = read_split_block(o, d, comm, r.replicas, grid ? grid->replica() : comm.rank(), first, last);
  });

  const OutputLayout l = output_layout(d);
  const Scaling s = scaling_of(d);
  const std::vector<double> outputs =
      engine ? predict_pipelined(*engine, *grid, block, l, s, o.batch) : predict_block(*model, block, l, s, o.batch);
  const auto t = block.targets.to(torch::kDouble).contiguous();
  collective_check(comm, [&] {
    if (last && !l.classification && t.numel() != block.rows.size() * l.width) {
      throw DataError(o.input + ": " + std::to_string(t.numel() / std::max<std::int64_t>(1, block.rows.size())) +
                      " target values per sample, the model predicts " + std::to_string(l.width));
    }
  });
  // The last stages' rows, in rank order: replica order under either grid order.
  Predictions p;
  p.outputs = comm.gatherv(outputs, 0);
  p.targets = comm.gatherv(std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel()), 0);
  r.h5 = o.prefix + ".h5";
  r.csv = o.prefix + ".csv";
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
      for (std::int64_t w = 0; w < l.width; ++w) {
        p.prediction[static_cast<std::size_t>(i * l.width + w)] =
            p.outputs[static_cast<std::size_t>(i * l.per_sample + w * l.per_value + l.point)];
      }
    }
    write_predictions_csv(r.csv, l, p);
    write_predictions_h5(r.h5, o.model_dir, o.input + ":" + o.split, l, p);
  });
  r.seconds = wall_seconds() - start;
  return r;
}

}  // namespace hpctrain
