// The model registry: config names to the families' factories (one file per family; the
// parts they share are in ModelParts.*).
#include <map>

#include "models/Model.hpp"
#include "models/ModelParts.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

const std::map<std::string, ModelFactory>& registry() {
  using C = const ModelConfig&;
  using I = const InputSpec&;
  using G = const GroupSum&;
  static const std::map<std::string, ModelFactory> r = {
      {"mlp", [](C c, I in, G g) { return make_mlp(c, in, g); }},
      {"cnn", [](C c, I in, G g) { return make_cnn(c, in, g); }},
      {"resnet", [](C c, I in, G g) { return make_resnet(c, in, g); }},
      {"transformer", [](C c, I in, G) { return make_transformer(c, in); }},
      {"lstm", [](C c, I in, G) { return make_lstm_model(c, in, false); }},
      {"bilstm", [](C c, I in, G) { return make_lstm_model(c, in, true); }},
      {"cnn_bilstm", [](C c, I in, G g) { return make_cnn_bilstm(c, in, g); }},
      {"forecaster", [](C c, I in, G) { return make_forecaster(c, in); }},
  };
  return r;
}

}  // namespace

ModelPtr build_model(const ModelConfig& config, const InputSpec& input, const GroupSum& group) {
  const auto& r = registry();
  auto it = r.find(config.name);
  if (it == r.end()) throw ConfigError("model.name: unknown model \"" + config.name + "\"");
  return it->second(config, input, group);
}

std::vector<std::string> registered_models() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
  for (auto& b : module.buffers()) {
    if (b.dim() == 4) b.set_data(b.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

std::int64_t parameter_count(const torch::nn::Module& module) {
  std::int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace hpctrain
