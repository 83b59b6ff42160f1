// `hpctrain inspect FILE.h5 [--no-verify]`: a data set's metadata, shapes, class balance and hashes.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Hdf5.hpp"
#include "util/Error.hpp"

namespace hpctrain {

namespace {

struct InspectArguments {
  std::string path;
  bool no_verify = false;
};

void describe_header(const DatasetMeta& m, const std::string& path, std::ostringstream& out) {
  out << path << "\n  format   " << kFormatName << " v" << kFormatVersion << "\n  name     " << m.name
      << "\n  source   " << m.source << "\n  created  " << m.created << "\n  task     " << task_name(m.task);
  if (m.task == Task::Classification) {
    out << "\n  classes  " << m.num_classes << ":";
    for (std::size_t i = 0; i < m.class_names.size(); ++i) out << (i ? ", " : " ") << m.class_names[i];
  }
  if (!m.feature_names.empty()) {
    out << (m.sample_shape.size() == 2 ? "\n  variables " : "\n  features ") << m.feature_names.size() << ":";
    for (std::size_t i = 0; i < m.feature_names.size(); ++i) out << (i ? ", " : " ") << m.feature_names[i];
  }
  out << "\n";
}

// Labels per class, the last entry counting those out of range.
std::vector<std::int64_t> count_labels(const H5File& file, const std::string& name, std::int64_t num_classes,
                                       std::string& digest) {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(num_classes) + 1, 0);
  digest = dataset_sha256(file, name, [&](const void* rows, std::int64_t n) {
    const auto* y = static_cast<const std::int32_t*>(rows);
    for (std::int64_t i = 0; i < n; ++i) {
      ++counts[y[i] >= 0 && y[i] < num_classes ? static_cast<std::size_t>(y[i]) : counts.size() - 1];
    }
  });
  return counts;
}

// One split dataset: dtype and shape, its hash against the stored one, and for labels the
// class balance. Appends what failed to `bad`.
void describe_dataset(const H5File& file, const DatasetMeta& m, const SplitMeta& split, const std::string& ds,
                      bool verify, std::ostringstream& out, std::vector<std::string>& bad) {
  const std::string name = "/" + split.name + "/" + ds;
  const DatasetInfo info = dataset_info(file, name);
  out << "  " << name << "  " << info.dtype << " [";
  for (std::size_t i = 0; i < info.shape.size(); ++i) out << (i ? ", " : "") << info.shape[i];
  out << "]";
  const bool labels = ds == "labels";
  std::string digest;
  std::vector<std::int64_t> counts;
  if (labels) {
    counts = count_labels(file, name, m.num_classes, digest);
  } else if (verify) {
    digest = dataset_sha256(file, name);
  }
  if (verify) {
    const std::string& stored = ds == m.inputs_name ? split.inputs_sha256 : split.targets_sha256;
    const bool ok = digest == stored;
    out << "  sha256 "
        << (ok ? "ok" : "MISMATCH (stored " + (stored.empty() ? "none" : stored) + ", computed " + digest + ")");
    if (!ok) bad.push_back(name);
  }
  out << "\n";
  if (!labels) return;
  out << "    class balance:";
  for (std::int64_t c = 0; c < m.num_classes; ++c) {
    out << " " << c << ":" << counts[c] << " (" << std::fixed;
    out.precision(1);
    out << 100.0 * counts[c] / std::max<std::int64_t>(1, split.count) << "%)";
  }
  if (counts.back() > 0) {
    out << "  OUT OF RANGE: " << counts.back();
    bad.push_back(name + " (labels out of range)");
  }
  out << "\n";
}

int run_inspect(const InspectArguments& a) {
  Communicator world = Communicator::world();
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    H5File file = H5File::open_read_serial(a.path);
    const DatasetMeta m = read_dataset_meta(file);
    std::ostringstream out;
    describe_header(m, a.path, out);
    std::vector<std::string> bad;
    for (const SplitMeta* split : {&m.train, &m.test}) {
      for (const std::string& ds : {m.inputs_name, m.targets_name}) {
        describe_dataset(file, m, *split, ds, !a.no_verify, out, bad);
      }
    }
    std::printf("%s", out.str().c_str());
    if (!bad.empty()) {
      std::string list;
      for (const auto& b : bad) list += (list.empty() ? "" : ", ") + b;
      throw DataError(a.path + ": verification failed for " + list);
    }
  });
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& parent, Commands& commands) {
  auto a = std::make_shared<InspectArguments>();
  CLI::App* app = parent.add_subcommand("inspect", "show a data set's metadata and class balance, verify its hashes");
  app->footer(
      "Prints the data set's metadata, shapes, dtypes and class balance, and verifies the\n"
      "SHA-256 of every dataset against its sha256 attribute (exit code 3 when one does not\n"
      "match; docs/data-format.md).");
  app->add_option("FILE", a->path, "the data set (hpctrain's HDF5 layout)")->required()->type_name("FILE.h5");
  app->add_flag("--no-verify", a->no_verify, "skip the hashes of inputs and targets (labels are still read)");
  commands.push_back({app, [a] { return run_inspect(*a); }});
}

}  // namespace hpctrain
