#pragma once
// The schema table's sections (SchemaTable.cpp and SchemaTableRun.cpp); schema_entries()
// joins them in this order. Only config/ includes this header.
#include <vector>

#include "config/SchemaTable.hpp"

namespace hpctrain {

std::vector<SchemaEntry> data_entries();        // data
std::vector<SchemaEntry> model_entries();       // model
std::vector<SchemaEntry> training_entries();    // optimizer, schedule, train
std::vector<SchemaEntry> stopping_entries();    // train: early stopping, target
std::vector<SchemaEntry> runtime_entries();     // comm, device, precision
std::vector<SchemaEntry> parallel_entries();    // parallel
std::vector<SchemaEntry> experiment_entries();  // cv, search
std::vector<SchemaEntry> output_entries();      // checkpoint, run

}  // namespace hpctrain
