#pragma once
// Batched inference with an exported model (run/Export.hpp), MPI-parallel over the input's
// rows, and through a pipeline of stages when one rank should not hold the whole model.
#include <cstdint>
#include <string>
#include <vector>

#include "comm/Communicator.hpp"

namespace hpctrain {

struct PredictOptions {
  std::string model_dir;  // hpctrain export's folder: model.json and model.safetensors
  std::string input;      // a data set in hpctrain's HDF5 layout
  std::string split = "test";
  std::string prefix;  // writes PREFIX.h5 and PREFIX.csv
  std::int64_t batch = 256;
  // Pipeline stages (--stages): the ranks form stages x replicas (replicas_inner, as a
  // training run's default grid); every rank loads only the tensors of its stage's pieces.
  int stages = 1;
  // Where stages 1.. start (--stage-split, as parallel.stage_split); empty: balanced by the
  // pieces' parameter counts.
  std::vector<std::int64_t> stage_split;
};

struct PredictResult {
  std::int64_t samples = 0;
  std::string h5, csv;
  double seconds = 0;
  int stages = 1, replicas = 1;
  std::string split_described;  // the stages' blocks ("stem+blocks 0-1 | blocks 2-3+head"); empty without stages
};

// Collective: every replica predicts its block of the split's rows; rank 0 writes PREFIX.h5
// and PREFIX.csv. Throws UsageError naming --stages or --stage-split for a layout that
// cannot run, DataError for a model or input that does not fit together.
PredictResult predict_file(const PredictOptions& options, const Communicator& comm);

}  // namespace hpctrain
