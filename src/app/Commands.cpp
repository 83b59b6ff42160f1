#include "app/Commands.hpp"

#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "app/BenchCommands.hpp"
#include "comm/Communicator.hpp"
#include "config/Schema.hpp"
#include "data/DatasetLayout.hpp"
#include "data/ImageData.hpp"
#include "data/Importer.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "launch/Mpi.hpp"
#include "launch/ProcessLayout.hpp"
#include "report/MetricsLog.hpp"
#include "report/RunReport.hpp"
#include "train/Trainer.hpp"
#include "util/Error.hpp"
#include "util/Sha256.hpp"

namespace hpctrain {
namespace {

const char* kTrainHelp =
    "usage: hpctrain train CONFIG.json [key.path=value ...]\n"
    "\n"
    "Trains the model that CONFIG describes, data-parallel over every MPI rank:\n"
    "  mpirun -np 4 build/hpctrain train configs/fashion_mnist_cnn.json train.epochs=5\n"
    "Overrides take the same checks as the file (docs/config.md lists every key).\n"
    "Writes RUN_DIR (run.dir) with config.json, metrics.jsonl and report.json.\n";

const char* kImportHelp =
    "usage: hpctrain import fashion-mnist|mnist [--source DIR] [--output FILE.h5]\n"
    "\n"
    "Converts idx files (plain or .gz) into hpctrain's HDF5 layout (docs/data-format.md).\n"
    "  --source DIR    folder with train-images-idx3-ubyte[.gz] and friends\n"
    "                  (default for fashion-mnist: /usr/share/datasets/fashion-mnist)\n"
    "  --output FILE   HDF5 file to write (default: data/KIND.h5)\n";

const char* kInspectHelp =
    "usage: hpctrain inspect FILE.h5 [--no-verify]\n"
    "\n"
    "Prints the data set's metadata, shapes, dtypes and class balance, and verifies the\n"
    "SHA-256 of every dataset (exit code 3 when one does not match).\n";

const char* kConfigHelp =
    "usage: hpctrain config --docs | hpctrain config CONFIG.json [key.path=value ...]\n"
    "\n"
    "--docs prints the reference of every config key (docs/config.md is generated from it);\n"
    "with a file, prints the resolved config after defaults and overrides.\n";

bool wants_help(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

int cmd_version() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::printf("hpctrain %s\n%s", HPCTRAIN_VERSION_STRING, software_versions_text().c_str());
  return 0;
}

int cmd_import(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kImportHelp);
    return 0;
  }
  if (args.empty()) throw UsageError("import: name the data set kind (fashion-mnist or mnist)");
  const std::string kind = args[0];
  std::string source = default_idx_source(kind), output;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if ((args[i] == "--source" || args[i] == "--output") && i + 1 < args.size()) {
      (args[i] == "--source" ? source : output) = args[i + 1];
      ++i;
    } else {
      throw UsageError("import: unexpected argument \"" + args[i] + "\"");
    }
  }
  if (kind != "fashion-mnist" && kind != "mnist") {
    throw UsageError("import: unknown data set kind \"" + kind + "\" (known: fashion-mnist, mnist)");
  }
  if (source.empty()) throw UsageError("import: --source DIR is required for " + kind);
  if (output.empty()) {
    output = "data/" + kind + ".h5";
    make_directories("data");
  }
  Communicator world = Communicator::world();
  // One rank writes; the others wait and share its outcome.
  ImportResult result;
  collective_check(world, [&] {
    if (world.rank() == 0) result = import_idx_dataset(kind, source, output);
  });
  if (world.rank() == 0) {
    std::printf("imported %s: %lld train and %lld test samples -> %s\n", kind.c_str(),
                static_cast<long long>(result.train_count), static_cast<long long>(result.test_count), output.c_str());
  }
  return 0;
}

std::string hash_dataset(const H5File& file, const std::string& name, std::int64_t& rows_out,
                         std::vector<std::int64_t>* label_counts, std::int64_t num_classes) {
  const DatasetInfo info = dataset_info(file, name);
  std::int64_t row_bytes = static_cast<std::int64_t>(info.element_size);
  for (std::size_t i = 1; i < info.shape.size(); ++i) row_bytes *= info.shape[i];
  const std::int64_t rows = info.shape.empty() ? 0 : info.shape[0];
  const std::int64_t block = std::max<std::int64_t>(1, (64 << 20) / std::max<std::int64_t>(1, row_bytes));
  std::vector<std::uint8_t> buffer(static_cast<std::size_t>(std::min(block, rows) * row_bytes));
  Sha256 h;
  const hid_t mem = info.dtype == "int32" ? H5T_NATIVE_INT32 : H5T_NATIVE_UINT8;
  for (std::int64_t r = 0; r < rows; r += block) {
    const std::int64_t n = std::min(block, rows - r);
    read_rows(file, name, r, n, mem, buffer.data());
    h.update(buffer.data(), static_cast<std::size_t>(n * row_bytes));
    if (label_counts) {
      const auto* y = reinterpret_cast<const std::int32_t*>(buffer.data());
      for (std::int64_t i = 0; i < n; ++i) {
        if (y[i] >= 0 && y[i] < num_classes) {
          ++(*label_counts)[static_cast<std::size_t>(y[i])];
        } else {
          ++label_counts->back();
        }
      }
    }
  }
  rows_out = rows;
  return h.hex_digest();
}

int cmd_inspect(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kInspectHelp);
    return 0;
  }
  std::string path;
  bool verify = true;
  for (const auto& a : args) {
    if (a == "--no-verify") {
      verify = false;
    } else if (path.empty()) {
      path = a;
    } else {
      throw UsageError("inspect: unexpected argument \"" + a + "\"");
    }
  }
  if (path.empty()) throw UsageError("inspect: name the HDF5 file");
  Communicator world = Communicator::world();
  int code = 0;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    H5File file = H5File::open_read_serial(path);
    const DatasetMeta m = read_dataset_meta(file);
    std::ostringstream out;
    out << path << "\n  format   " << kFormatName << " v" << kFormatVersion << "\n  name     " << m.name
        << "\n  source   " << m.source << "\n  created  " << m.created << "\n  classes  " << m.num_classes << ":";
    for (std::size_t i = 0; i < m.class_names.size(); ++i) out << (i ? ", " : " ") << m.class_names[i];
    out << "\n";
    std::vector<std::string> bad;
    for (const SplitMeta* s : {&m.train, &m.test}) {
      for (const std::string ds : {"images", "labels"}) {
        const std::string name = "/" + s->name + "/" + ds;
        const DatasetInfo info = dataset_info(file, name);
        out << "  " << name << "  " << info.dtype << " [";
        for (std::size_t i = 0; i < info.shape.size(); ++i) out << (i ? ", " : "") << info.shape[i];
        out << "]";
        const std::string& stored = ds == "images" ? s->images_sha256 : s->labels_sha256;
        std::vector<std::int64_t> counts(static_cast<std::size_t>(m.num_classes) + 1, 0);
        if (verify || ds == "labels") {
          std::int64_t rows = 0;
          const std::string got = hash_dataset(file, name, rows, ds == "labels" ? &counts : nullptr, m.num_classes);
          if (verify) {
            const bool ok = got == stored;
            out << "  sha256 "
                << (ok ? "ok" : "MISMATCH (stored " + (stored.empty() ? "none" : stored) + ", computed " + got + ")");
            if (!ok) bad.push_back(name);
          }
        }
        out << "\n";
        if (ds == "labels") {
          out << "    class balance:";
          for (std::int64_t c = 0; c < m.num_classes; ++c) {
            out << " " << c << ":" << counts[c] << " (" << std::fixed;
            out.precision(1);
            out << 100.0 * counts[c] / std::max<std::int64_t>(1, s->count) << "%)";
          }
          if (counts.back() > 0) {
            out << "  OUT OF RANGE: " << counts.back();
            bad.push_back(name + " (labels out of range)");
          }
          out << "\n";
        }
      }
    }
    std::printf("%s", out.str().c_str());
    if (!bad.empty()) {
      std::string list;
      for (const auto& b : bad) list += (list.empty() ? "" : ", ") + b;
      throw DataError(path + ": verification failed for " + list);
    }
    (void)code;
  });
  return code;
}

int cmd_config(const std::vector<std::string>& args) {
  if (wants_help(args) || args.empty()) {
    std::printf("%s", kConfigHelp);
    return args.empty() ? 2 : 0;
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (args[0] == "--docs") {
    if (rank == 0) std::printf("%s", config_reference_markdown().c_str());
    return 0;
  }
  const std::vector<std::string> overrides(args.begin() + 1, args.end());
  Communicator world = Communicator::world();
  ResolvedConfig resolved;
  collective_check(world, [&] { resolved = load_config(args[0], overrides); });
  if (rank == 0) std::printf("%s", resolved.resolved_json.c_str());
  return 0;
}

void configure_threads(const RunConfig& run, const ProcessLayout& layout, int& threads) {
  threads = run.threads > 0 ? static_cast<int>(run.threads) : layout.default_threads();
  torch::set_num_threads(threads);
}

int cmd_train(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kTrainHelp);
    return 0;
  }
  if (args.empty()) throw UsageError("train: name the config file");
  Communicator world = Communicator::world();
  RunContext ctx;
  ctx.config_path = args[0];
  ctx.overrides.assign(args.begin() + 1, args.end());
  ctx.started = utc_timestamp();
  ctx.launch = LaunchEnvironment::detect();
  ctx.layout = ProcessLayout::discover(world.raw());

  ResolvedConfig resolved;
  collective_check(world, [&] { resolved = load_config(ctx.config_path, ctx.overrides); });
  const Config& config = resolved.config;
  configure_threads(config.run, ctx.layout, ctx.threads);

  const std::string run_dir = config.run.dir;
  MetricsLog log;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    make_directories(run_dir);
    write_file_atomic(run_dir + "/config.json", resolved.resolved_json);
    log = MetricsLog(run_dir + "/metrics.jsonl");
  });

  const bool root = world.rank() == 0;
  if (root) {
    std::printf("hpctrain %s: %d ranks on %d node(s), %d threads per rank, run directory %s\n", HPCTRAIN_VERSION_STRING,
                world.size(), ctx.layout.node_count, ctx.threads, run_dir.c_str());
    std::fflush(stdout);
  }
  ImageData data = ImageData::load(config.data, static_cast<std::uint64_t>(config.train.seed), world);
  if (root) {
    std::printf("data %s: %lld train / %zu validation / %lld test samples, shard read %.2f s, hashes %s\n",
                config.data.path.c_str(), static_cast<long long>(data.train_count()), data.split().validation.size(),
                static_cast<long long>(data.meta().test.count), data.load_stats().read_seconds,
                config.data.verify_hashes ? "verified" : "not verified");
    std::fflush(stdout);
  }

  std::unique_ptr<Trainer> trainer;
  collective_check(world, [&] { trainer = std::make_unique<Trainer>(config, world, data, log); });
  const TrainResult result = trainer->run();

  std::string report_text;
  collective_check(world,
                   [&] { report_text = write_run_report(run_dir + "/report.json", config, ctx, data, result, world); });
  // As in report.json: the slowest rank's training time.
  double train_seconds = result.train_seconds;
  world.allreduce_max(&train_seconds, 1);
  if (root) {
    std::printf("\nsummary: %lld steps, %.0f samples/s, train %.1f s\n", static_cast<long long>(result.steps),
                static_cast<double>(result.samples) / std::max(train_seconds, 1e-9), train_seconds);
    if (!result.epochs.empty() && result.epochs.back().has_validation) {
      std::printf("  validation: loss %.4f accuracy %.4f\n", result.epochs.back().val_loss,
                  result.epochs.back().val_accuracy);
    }
    if (result.has_test) std::printf("  test:       loss %.4f accuracy %.4f\n", result.test.loss, result.test.accuracy);
    std::printf("report: %s/report.json\nmetrics: %s/metrics.jsonl\n", run_dir.c_str(), run_dir.c_str());
  }
  return 0;
}

}  // namespace

std::string usage_text() {
  return "usage: hpctrain COMMAND [ARGS]\n"
         "\n"
         "commands:\n"
         "  import KIND     import a data set into hpctrain's HDF5 layout (fashion-mnist, mnist)\n"
         "  train CONFIG    train data-parallel over the MPI ranks: mpirun -np N hpctrain train CONFIG [k=v ...]\n"
         "  inspect FILE    show a data set's metadata and class balance, verify its hashes\n"
         "  config          print the config reference (--docs) or a resolved config\n"
         "  bench           micro-benchmarks: allreduce (bucketed vs plain MPI), io (shard load vs sequential)\n"
         "\n"
         "  --version       LibTorch, MPI and HDF5 versions; CUDA and NCCL support\n"
         "  COMMAND --help  help for one command\n";
}

int run_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::printf("%s", usage_text().c_str());
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "--version" || args[0] == "version") return cmd_version();
  if (args[0] == "import") return cmd_import(rest);
  if (args[0] == "train") return cmd_train(rest);
  if (args[0] == "inspect") return cmd_inspect(rest);
  if (args[0] == "config") return cmd_config(rest);
  if (args[0] == "bench") return run_bench_command(rest);
  throw UsageError("unknown command \"" + args[0] + "\"");
}

}  // namespace hpctrain
