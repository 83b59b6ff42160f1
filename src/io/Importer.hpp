#pragma once
// Importers from source formats into the canonical HDF5 layout (data/DatasetLayout.hpp).
#include <cstdint>
#include <string>

namespace hpctrain {

struct ImportResult {
  std::string output;
  std::int64_t train_count = 0;
  std::int64_t test_count = 0;
};

// MNIST-style idx files (plain or .gz): train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
// t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in `source_dir`.
// `kind` is "fashion-mnist" or "mnist" (class names). Writes atomically (temporary file, rename).
ImportResult import_idx_dataset(const std::string& kind, const std::string& source_dir, const std::string& output);

// Default source folder of a known data set (Debian's dataset-fashion-mnist package).
std::string default_idx_source(const std::string& kind);

}  // namespace hpctrain
