#include "app/Commands.hpp"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "app/BenchCommands.hpp"
#include "checkpoint/Checkpoint.hpp"
#include "run/Export.hpp"
#include "comm/Communicator.hpp"
#include "config/Schema.hpp"
#include "experiment/Experiment.hpp"
#include "io/CsvImporter.hpp"
#include "io/DatasetLayout.hpp"
#include "io/Importer.hpp"
#include "data/ShardedDataset.hpp"
#include "io/TimeSeries.hpp"
#include "launch/LaunchEnvironment.hpp"
#include "launch/Mpi.hpp"
#include "launch/ProcessLayout.hpp"
#include "launch/Signals.hpp"
#include "train/MetricsLog.hpp"
#include "util/Files.hpp"
#include "run/RunReport.hpp"
#include "train/Device.hpp"
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
    "With cv.folds >= 2 it runs a k-fold cross-validation, with search.method a\n"
    "hyperparameter search, over groups of cv.ranks_per_group ranks (docs/cv-and-search.md):\n"
    "  mpirun -np 4 build/hpctrain train configs/fashion_mnist_cnn_cv.json\n"
    "Overrides take the same checks as the file (docs/config.md lists every key).\n"
    "Writes RUN_DIR (run.dir) with config.json, metrics.jsonl and report.json.\n";

const char* kImportHelp =
    "usage: hpctrain import fashion-mnist|mnist [--source DIR] [--output FILE.h5]\n"
    "       hpctrain import csv FILE.csv --label COLUMN [--task regression|classification]\n"
    "                       [--test TEST.csv | --test-fraction F] [--seed N] [--output FILE.h5]\n"
    "       hpctrain import timeseries FILE.csv --target COLUMN [--drop COL,COL]\n"
    "                       [--window W] [--horizon H] [--span S] [--test-fraction F]\n"
    "                       [--output FILE.h5]\n"
    "       hpctrain import synthetic seasonal|cpu [--length L] [--seed N]\n"
    "                       [--window W] [--horizon H] [--span S] [--test-fraction F]\n"
    "                       [--output FILE.h5]\n"
    "\n"
    "Converts idx files (plain or .gz) or a CSV table into hpctrain's HDF5 layout\n"
    "(docs/data-format.md).\n"
    "  --source DIR    folder with train-images-idx3-ubyte[.gz] and friends\n"
    "                  (default for fashion-mnist: /usr/share/datasets/fashion-mnist)\n"
    "  --output FILE   HDF5 file to write (default: data/KIND.h5, data/STEM.h5 for csv)\n"
    "CSV: a header row; every column but the label is a numeric feature. --task\n"
    "regression (default) reads a numeric label; classification takes label strings as\n"
    "class names. Without --test, a seeded --test-fraction (default 0.2) of rows is the\n"
    "test split.\n"
    "Time series (one row per step; every column but --drop is a variable): windows of W\n"
    "steps (default 96) of all variables, each with the --target variable H steps\n"
    "(default 1) after the window as its target, or with --span S (default 1) the S steps\n"
    "H .. H+S-1 after it (targets [N, S]: a multi-step forecast); the last --test-fraction\n"
    "(default 0.2) of the steps holds the test targets. synthetic makes a reproducible\n"
    "hourly series:\n"
    "seasonal (trend, daily and weekly seasons, noise) or cpu (a server's CPU allocation:\n"
    "office hours, nightly backup, random batch jobs), L steps (default 17520, two years).\n";

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

int cmd_import_csv(const std::vector<std::string>& args) {
  CsvImportOptions o;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--label" && has_value) {
      o.label = args[++i];
    } else if (a == "--task" && has_value) {
      o.task = args[++i];
    } else if (a == "--test" && has_value) {
      o.test_path = args[++i];
    } else if (a == "--test-fraction" && has_value) {
      const std::string v = args[++i];
      char* end = nullptr;
      o.test_fraction = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(o.test_fraction > 0) || !(o.test_fraction < 1)) {
        throw UsageError("import csv: --test-fraction expects a number in (0, 1), found \"" + v + "\"");
      }
    } else if (a == "--seed" && has_value) {
      o.seed = std::strtoull(args[++i].c_str(), nullptr, 10);
    } else if (a == "--output" && has_value) {
      o.output = args[++i];
    } else if (a == "--name" && has_value) {
      o.name = args[++i];
    } else if (a.rfind("--", 0) != 0 && o.path.empty()) {
      o.path = a;
    } else {
      throw UsageError("import csv: unexpected argument \"" + a + "\"");
    }
  }
  if (o.path.empty()) throw UsageError("import csv: name the CSV file");
  if (o.label.empty()) throw UsageError("import csv: name the label column with --label COLUMN");
  if (o.task != "regression" && o.task != "classification") {
    throw UsageError("import csv: --task expects regression or classification, found \"" + o.task + "\"");
  }
  if (o.output.empty()) {
    std::string stem = o.path.substr(o.path.find_last_of('/') + 1);
    stem = stem.substr(0, stem.rfind('.'));
    o.output = "data/" + stem + ".h5";
    make_directories("data");
  }
  Communicator world = Communicator::world();
  ImportResult result;
  collective_check(world, [&] {
    if (world.rank() == 0) result = import_csv(o);
  });
  if (world.rank() == 0) {
    std::printf("imported %s (%s, label %s): %lld train and %lld test rows -> %s\n", o.path.c_str(), o.task.c_str(),
                o.label.c_str(), static_cast<long long>(result.train_count), static_cast<long long>(result.test_count),
                o.output.c_str());
  }
  return 0;
}

// `import timeseries` and `import synthetic`: the window options, then the series.
int cmd_import_series(const std::string& kind, const std::vector<std::string>& args) {
  WindowOptions o;
  std::string path, target, drop_list, series_kind;
  std::int64_t length = 17520;
  std::uint64_t seed = 0;
  auto integer = [&](const std::string& flag, const std::string& v, std::int64_t min) {
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || x < min) {
      throw UsageError("import " + kind + ": " + flag + " expects an integer >= " + std::to_string(min) + ", found \"" +
                       v + "\"");
    }
    return static_cast<std::int64_t>(x);
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--window" && has_value) {
      o.window = integer(a, args[++i], 1);
    } else if (a == "--horizon" && has_value) {
      o.horizon = integer(a, args[++i], 1);
    } else if (a == "--span" && has_value) {
      o.span = integer(a, args[++i], 1);
    } else if (a == "--test-fraction" && has_value) {
      const std::string v = args[++i];
      char* end = nullptr;
      o.test_fraction = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(o.test_fraction > 0) || !(o.test_fraction < 1)) {
        throw UsageError("import " + kind + ": --test-fraction expects a number in (0, 1), found \"" + v + "\"");
      }
    } else if (a == "--output" && has_value) {
      o.output = args[++i];
    } else if (kind == "timeseries" && a == "--target" && has_value) {
      target = args[++i];
    } else if (kind == "timeseries" && a == "--drop" && has_value) {
      drop_list = args[++i];
    } else if (kind == "synthetic" && a == "--length" && has_value) {
      length = integer(a, args[++i], 2);
    } else if (kind == "synthetic" && a == "--seed" && has_value) {
      seed = static_cast<std::uint64_t>(integer(a, args[++i], 0));
    } else if (a.rfind("--", 0) != 0 && (kind == "timeseries" ? path : series_kind).empty()) {
      (kind == "timeseries" ? path : series_kind) = a;
    } else {
      throw UsageError("import " + kind + ": unexpected argument \"" + a + "\"");
    }
  }
  if (kind == "timeseries" && path.empty()) throw UsageError("import timeseries: name the CSV file");
  if (kind == "timeseries" && target.empty()) {
    throw UsageError("import timeseries: name the forecast column with --target COLUMN");
  }
  if (kind == "synthetic" && series_kind.empty())
    throw UsageError("import synthetic: name the series (seasonal or cpu)");
  std::vector<std::string> drop;
  for (std::size_t start = 0; !drop_list.empty() && start <= drop_list.size();) {
    const auto comma = drop_list.find(',', start);
    drop.push_back(drop_list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (o.output.empty()) {
    std::string stem = kind == "synthetic" ? "synthetic-" + series_kind : path.substr(path.find_last_of('/') + 1);
    stem = stem.substr(0, kind == "synthetic" ? std::string::npos : stem.rfind('.'));
    o.output = "data/" + stem + ".h5";
    make_directories("data");
  }
  Communicator world = Communicator::world();
  ImportResult result;
  Series series;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    series = kind == "synthetic" ? synthetic_series(series_kind, length, seed) : read_series_csv(path, target, drop);
    result = import_windows(series, o);
  });
  if (world.rank() == 0) {
    std::printf(
        "imported %s: %lld steps of %zu variables, windows of %lld, horizon %lld, span %lld: %lld train and %lld "
        "test samples -> %s\n",
        series.source.c_str(), static_cast<long long>(series.length), series.names.size(),
        static_cast<long long>(o.window), static_cast<long long>(o.horizon), static_cast<long long>(o.span),
        static_cast<long long>(result.train_count), static_cast<long long>(result.test_count), o.output.c_str());
  }
  return 0;
}

int cmd_import(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kImportHelp);
    return 0;
  }
  if (args.empty())
    throw UsageError("import: name the data set kind (fashion-mnist, mnist, csv, timeseries or synthetic)");
  const std::string kind = args[0];
  if (kind == "csv") return cmd_import_csv(std::vector<std::string>(args.begin() + 1, args.end()));
  if (kind == "timeseries" || kind == "synthetic") {
    return cmd_import_series(kind, std::vector<std::string>(args.begin() + 1, args.end()));
  }
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
    throw UsageError("import: unknown data set kind \"" + kind + "\" (known: fashion-mnist, mnist, csv)");
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
  const hid_t mem = info.dtype == "int32"     ? H5T_NATIVE_INT32
                    : info.dtype == "float32" ? H5T_NATIVE_FLOAT
                                              : H5T_NATIVE_UINT8;
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
    std::vector<std::string> bad;
    for (const SplitMeta* s : {&m.train, &m.test}) {
      for (const std::string& ds : {m.inputs_name, m.targets_name}) {
        const std::string name = "/" + s->name + "/" + ds;
        const DatasetInfo info = dataset_info(file, name);
        out << "  " << name << "  " << info.dtype << " [";
        for (std::size_t i = 0; i < info.shape.size(); ++i) out << (i ? ", " : "") << info.shape[i];
        out << "]";
        const std::string& stored = ds == m.inputs_name ? s->inputs_sha256 : s->targets_sha256;
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

// The config with overrides; an empty run.dir becomes the launch's default run directory
// (named after the Slurm job and array task, or after the config file).
ResolvedConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                               const LaunchEnvironment& launch) {
  ResolvedConfig resolved = load_config(path, overrides);
  if (!resolved.config.run.dir.empty()) return resolved;
  std::vector<std::string> with_dir = overrides;
  with_dir.push_back("run.dir=" + launch.default_run_dir(path));
  return load_config(path, with_dir);
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
  const LaunchEnvironment launch = LaunchEnvironment::detect();
  collective_check(world, [&] { resolved = load_run_config(args[0], overrides, launch); });
  if (rank == 0) std::printf("%s", resolved.resolved_json.c_str());
  return 0;
}

void configure_threads(const RunConfig& run, RunContext& ctx) {
  const ThreadChoice choice =
      choose_threads(run.threads, ctx.launch, ctx.layout.cpus_in_mask, ctx.layout.ranks_sharing_cpus);
  ctx.threads = choice.threads;
  ctx.threads_source = choice.source;
  torch::set_num_threads(ctx.threads);
}

// Plain data-parallel training of `resolved` over `world`, writing run.dir.
// The checkpoint to resume from under checkpoint.resume, verified, or none. Rank 0 picks
// (reporting corrupt files it passes over); every rank then reads the chosen one.
std::optional<CheckpointInfo> choose_resume(const Config& config, const std::string& dir, const std::string& resolved,
                                            const Communicator& world) {
  const std::string& mode = config.checkpoint.resume;
  if (mode == "none") return std::nullopt;
  std::string path;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    if (mode != "auto") {
      verify_checkpoint(mode);
      path = mode;
      return;
    }
    for (const auto& candidate : list_checkpoints(dir)) {
      try {
        verify_checkpoint(candidate);
        path = candidate;
        break;
      } catch (const DataError& e) {
        std::fprintf(stderr, "hpctrain: warning: skipping checkpoint: %s\n", e.what());
      }
    }
  });
  world.broadcast(path, 0);
  if (path.empty()) {
    if (world.rank() == 0) std::printf("checkpoint.resume=auto: no checkpoint in %s, starting fresh\n", dir.c_str());
    return std::nullopt;
  }
  CheckpointInfo info;
  collective_check(world, [&] {
    info = verify_checkpoint(path);
    const auto changes = unsafe_config_changes(info.config_json, resolved);
    if (!changes.empty()) {
      std::string list;
      for (const auto& c : changes) list += "\n  " + c;
      throw ConfigError(path +
                        ": the config differs from the checkpoint's in keys a resume cannot change "
                        "(docs/checkpoints.md lists those it can):" +
                        list);
    }
  });
  return info;
}

void train_once(const ResolvedConfig& resolved, RunContext& ctx, const Communicator& world) {
  const Config& config = resolved.config;
  const std::string run_dir = config.run.dir;
  const std::string checkpoint_dir = config.checkpoint.dir.empty() ? run_dir + "/checkpoints" : config.checkpoint.dir;
  install_preemption_handlers();
  collective_check(world, [&] {
    if (world.rank() == 0) make_directories(checkpoint_dir);
  });
  const std::optional<CheckpointInfo> resume = choose_resume(config, checkpoint_dir, resolved.resolved_json, world);
  MetricsLog log;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    make_directories(run_dir);
    write_file_atomic(run_dir + "/config.json", resolved.resolved_json);
    log = MetricsLog(run_dir + "/metrics.jsonl", resume.has_value());
  });
  if (resume && world.rank() == 0) {
    std::printf("resuming from %s (step %lld, epoch %lld, written by %lld ranks)\n", resume->path.c_str(),
                static_cast<long long>(resume->step), static_cast<long long>(resume->position.epoch),
                static_cast<long long>(resume->world_size));
  }
  if (resume) ctx.resumed_from = resume->path;

  const bool root = world.rank() == 0;
  if (root) {
    std::printf("hpctrain %s: %d ranks on %d node(s), %d threads per rank, run directory %s\n", HPCTRAIN_VERSION_STRING,
                world.size(), ctx.layout.node_count, ctx.threads, run_dir.c_str());
    std::fflush(stdout);
  }
  ShardedDataset data = ShardedDataset::load(config.data, static_cast<std::uint64_t>(config.train.seed), world);
  if (root) {
    std::printf("data %s: %lld train / %zu validation / %lld test samples, shard read %.2f s, hashes %s\n",
                config.data.path.c_str(), static_cast<long long>(data.train_count()), data.split().validation.size(),
                static_cast<long long>(data.meta().test.count), data.load_stats().read_seconds,
                config.data.verify_hashes ? "verified" : "not verified");
    std::fflush(stdout);
  }

  std::unique_ptr<Trainer> trainer;
  collective_check(world, [&] {
    trainer = std::make_unique<Trainer>(config, world, data, log);
    trainer->enable_checkpoints(checkpoint_dir, resolved.resolved_json);
    trainer->set_profile_prefix(run_dir + "/profile");
    if (resume) trainer->resume_from(*resume);
  });
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
      std::printf("  validation: loss %.4f", result.epochs.back().val_loss);
      if (data.classification()) std::printf(" accuracy %.4f", result.epochs.back().val_accuracy);
      std::printf("\n");
    }
    if (result.has_test) {
      std::printf("  test:       loss %.4f", result.test.loss);
      if (data.classification()) {
        std::printf(" accuracy %.4f\n", result.test.accuracy);
      } else {
        std::printf(" rmse %.4f mae %.4f", std::sqrt(result.test.mse), result.test.mae);
        if (!result.test.quantile_coverage.empty()) std::printf(" quantile loss %.4f", result.test.quantile_loss);
        std::printf("\n");
      }
    }
    std::printf("report: %s/report.json\nmetrics: %s/metrics.jsonl\n", run_dir.c_str(), run_dir.c_str());
  }
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
  if (const std::string problem = ctx.launch.world_size_mismatch(world.size()); !problem.empty()) {
    throw UsageError(problem);
  }

  ResolvedConfig resolved;
  collective_check(world, [&] { resolved = load_run_config(ctx.config_path, ctx.overrides, ctx.launch); });
  const Config& config = resolved.config;
  configure_threads(config.run, ctx);
  collective_check(world, [&] {
    const DeviceInfo& device = select_compute_device(config.device, ctx.layout.local_rank, ctx.layout.local_size);
    if (world.rank() == 0 && !device.notice.empty()) std::printf("%s\n", device.notice.c_str());
  });
  if (config.cv.folds == 0 && config.search.method == "none") {
    train_once(resolved, ctx, world);
    return 0;
  }

  // Cross-validation or search over groups of ranks, then optionally the final retrain.
  const std::string run_dir = config.run.dir;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    make_directories(run_dir);
    write_file_atomic(run_dir + "/config.json", resolved.resolved_json);
  });
  if (world.rank() == 0) {
    std::printf("hpctrain %s: %d ranks on %d node(s), %d threads per rank, run directory %s\n", HPCTRAIN_VERSION_STRING,
                world.size(), ctx.layout.node_count, ctx.threads, run_dir.c_str());
    std::fflush(stdout);
  }
  // SIGTERM/SIGUSR1 stop the running tasks at their next step; finished ones are recorded.
  install_preemption_handlers();
  const ExperimentResult result = run_experiment(resolved, world, run_dir);
  if (world.rank() == 0) {
    std::printf("\n%s\nreports: %s/\n", result.summary_text.c_str(), run_dir.c_str());
    std::fflush(stdout);
  }
  if (!result.any_ok) throw CollectiveError("every fold or trial failed (see " + run_dir + ")", 0, 1);
  if (config.cv.final_retrain) {
    // The chosen configuration on the whole training split, all ranks, test once.
    ResolvedConfig final_config;
    collective_check(world, [&] {
      final_config = parse_config(result.chosen_config, run_dir + " (chosen configuration)",
                                  {"data.val_fraction=0", "train.test_at_end=true", "train.early_stop_patience=0",
                                   "run.dir=" + run_dir + "/final"});
    });
    if (world.rank() == 0) std::printf("\nfinal retrain on the whole training split:\n");
    train_once(final_config, ctx, world);
  }
  return 0;
}

const char* kExportHelp =
    "usage: hpctrain export RUN_DIR [--checkpoint FILE] [--output DIR]\n"
    "\n"
    "Writes the trained model of RUN_DIR's newest checkpoint (or FILE) as DIR/model.safetensors\n"
    "and DIR/model.json, a description from which it can be rebuilt (default DIR:\n"
    "RUN_DIR/export). docs/checkpoints.md shows how to load it in Python.\n";

const char* kSearchMergeHelp =
    "usage: hpctrain search-merge RUN_DIR\n"
    "\n"
    "Joins a search that ran as shards (search.shards > 1, e.g. the tasks of a Slurm job array:\n"
    "slurm/search-array.sbatch) into one leaderboard. The shards' run directories are the\n"
    "folders directly under RUN_DIR; RUN_DIR receives search_report.json, leaderboard.csv,\n"
    "leaderboard.md and best_config.json. Trials of a shard that left no report are listed as\n"
    "failed. Exit code 1 when no trial succeeded.\n";

int cmd_search_merge(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kSearchMergeHelp);
    return 0;
  }
  if (args.size() != 1 || args[0].rfind("--", 0) == 0) throw UsageError("search-merge: name one RUN_DIR");
  Communicator world = Communicator::world();
  ExperimentResult result;
  collective_check(world, [&] {
    if (world.rank() == 0) result = merge_search_shards(args[0]);
  });
  int any = result.any_ok ? 1 : 0;
  world.broadcast(&any, sizeof(any), 0);
  if (world.rank() == 0) {
    std::printf("%s\nreports: %s/\n", result.summary_text.c_str(), args[0].c_str());
    std::fflush(stdout);
  }
  if (!any) throw CollectiveError("every trial failed (see " + args[0] + ")", 0, 1);
  return 0;
}

const char* kPredictHelp =
    "usage: mpirun -np N hpctrain predict MODEL_DIR INPUT.h5 [--split test|train] [--output PREFIX]\n"
    "                                   [--batch N]\n"
    "\n"
    "Batched inference with an exported model, MPI-parallel over the input's rows: writes\n"
    "PREFIX.h5 and PREFIX.csv (default PREFIX: MODEL_DIR/predictions_SPLIT).\n";

int cmd_export(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kExportHelp);
    return 0;
  }
  std::string run_dir, checkpoint, output;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == "--checkpoint" || args[i] == "--output") && i + 1 < args.size()) {
      (args[i] == "--checkpoint" ? checkpoint : output) = args[i + 1];
      ++i;
    } else if (run_dir.empty() && args[i].rfind("--", 0) != 0) {
      run_dir = args[i];
    } else {
      throw UsageError("export: unexpected argument \"" + args[i] + "\"");
    }
  }
  if (run_dir.empty() && checkpoint.empty()) throw UsageError("export: name the run directory");
  if (output.empty()) output = (run_dir.empty() ? std::string(".") : run_dir) + "/export";
  Communicator world = Communicator::world();
  ExportResult r;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    if (checkpoint.empty()) {
      const auto all = list_checkpoints(run_dir + "/checkpoints");
      if (all.empty())
        throw DataError(run_dir + "/checkpoints: no checkpoint to export (train with checkpoint.at_end)");
      checkpoint = all.front();
    }
    r = export_model(checkpoint, output);
  });
  if (world.rank() == 0) {
    std::printf("exported %s: %lld tensors -> %s, %s\n", r.checkpoint.c_str(), static_cast<long long>(r.tensors),
                r.weights.c_str(), r.description.c_str());
  }
  return 0;
}

int cmd_predict(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::printf("%s", kPredictHelp);
    return 0;
  }
  std::vector<std::string> positional;
  std::string split = "test", output;
  std::int64_t batch = 256;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const bool has_value = i + 1 < args.size();
    if (args[i] == "--split" && has_value) {
      split = args[++i];
    } else if (args[i] == "--output" && has_value) {
      output = args[++i];
    } else if (args[i] == "--batch" && has_value) {
      batch = std::strtoll(args[++i].c_str(), nullptr, 10);
      if (batch < 1) throw UsageError("predict: --batch expects a positive integer");
    } else if (args[i].rfind("--", 0) != 0) {
      positional.push_back(args[i]);
    } else {
      throw UsageError("predict: unexpected argument \"" + args[i] + "\"");
    }
  }
  if (positional.size() != 2) throw UsageError("predict: name the exported model folder and the input HDF5 file");
  if (split != "test" && split != "train") throw UsageError("predict: --split expects test or train");
  if (output.empty()) output = positional[0] + "/predictions_" + split;
  Communicator world = Communicator::world();
  const PredictResult r = predict_file(positional[0], positional[1], split, output, batch, world);
  if (world.rank() == 0) {
    std::printf("predicted %lld samples of %s:%s on %d ranks in %.2f s -> %s, %s\n", static_cast<long long>(r.samples),
                positional[1].c_str(), split.c_str(), world.size(), r.seconds, r.h5.c_str(), r.csv.c_str());
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
         "  export RUN_DIR  write the trained model as safetensors + JSON description\n"
         "  predict MODEL INPUT.h5  batched inference, MPI-parallel: mpirun -np N hpctrain predict ...\n"
         "  search-merge RUN_DIR  join the shards of a search that ran as a job array\n"
         "  plan CONFIG     per-rank memory: parameters, gradients, optimizer, activations (checkpointing)\n"
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
  if (args[0] == "export") return cmd_export(rest);
  if (args[0] == "predict") return cmd_predict(rest);
  if (args[0] == "search-merge") return cmd_search_merge(rest);
  if (args[0] == "plan") return cmd_plan(rest);
  throw UsageError("unknown command \"" + args[0] + "\"");
}

}  // namespace hpctrain
