#pragma once
// A trained model for use elsewhere: safetensors weights plus a JSON description from
// which it can be rebuilt (docs/checkpoints.md, "Export"); run/Predict.hpp runs it.
#include <cstdint>
#include <string>

namespace hpctrain {

inline constexpr const char* kModelFormat = "hpctrain-model";
inline constexpr std::int64_t kModelFormatVersion = 1;

struct ExportResult {
  std::string checkpoint;
  std::string weights;      // DIR/model.safetensors
  std::string description;  // DIR/model.json
  std::int64_t tensors = 0;
};

// Writes the model of `checkpoint_path` (verified first) into `out_dir`. Batch-norm
// statistics are the mean over the ranks that wrote the checkpoint, as evaluation uses them.
ExportResult export_model(const std::string& checkpoint_path, const std::string& out_dir);

}  // namespace hpctrain
