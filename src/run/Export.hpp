#pragma once
// A trained model for use elsewhere: safetensors weights plus a JSON description from
// which it can be rebuilt (docs/checkpoints.md, "Export"), and batched inference with it.
#include <string>

#include "comm/Communicator.hpp"

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

struct PredictResult {
  std::int64_t samples = 0;
  std::string h5, csv;
  double seconds = 0;
};

// Collective: every rank predicts its block of `split` of `input` (the data-set layout)
// with the exported model in `model_dir`; rank 0 writes PREFIX.h5 and PREFIX.csv.
PredictResult predict_file(const std::string& model_dir, const std::string& input, const std::string& split,
                           const std::string& prefix, std::int64_t batch, const Communicator& comm);

}  // namespace hpctrain
