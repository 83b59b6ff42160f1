#pragma once
// CIFAR-10 and CIFAR-100 from the official binary batches into the canonical HDF5 layout
// (io/DatasetLayout.hpp): images uint8 [N, 3, 32, 32], labels int32 [N].
#include <string>

#include "io/Importer.hpp"

namespace hpctrain {

// `kind` "cifar10": data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin in
// `source_dir`, records of 1 label byte + 3072 image bytes (1024 red, green, blue, each row
// by row); class names from batches.meta.txt when present, else the published ones.
// `kind` "cifar100": train.bin and test.bin, records of a coarse and a fine label byte +
// 3072 image bytes; `labels` "fine" (100 classes, the default) or "coarse" (20 superclasses);
// class names from fine_label_names.txt / coarse_label_names.txt when present, else "0"...
// Throws DataError naming the file (and the record) that is missing, truncated or out of
// range. Writes atomically (temporary file, rename).
ImportResult import_cifar(const std::string& kind, const std::string& source_dir, const std::string& output,
                          const std::string& labels = "fine");

}  // namespace hpctrain
