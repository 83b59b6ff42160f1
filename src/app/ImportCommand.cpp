// `hpctrain import fashion-mnist|mnist|cifar10|cifar100|csv|timeseries|synthetic ...`: a data set into hpctrain's
// HDF5 layout (docs/data-format.md). Rank 0 writes; every rank shares its outcome.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "app/Command.hpp"
#include "comm/Communicator.hpp"
#include "io/CifarImporter.hpp"
#include "io/CsvImporter.hpp"
#include "io/Importer.hpp"
#include "io/TimeSeries.hpp"
#include "util/Files.hpp"

namespace hpctrain {

namespace {

struct IdxArguments {
  std::string kind, source, output;
};

struct CifarArguments {
  std::string kind, source, output, labels = "fine";
};

struct SeriesArguments {
  std::string kind;  // "timeseries" or "synthetic"
  std::string path, target, series;
  std::vector<std::string> drop;
  std::int64_t length = 17520;
  std::uint64_t seed = 0;
  WindowOptions window;
};

// data/STEM.h5 unless `output` names a file; creates the file's folder (data/ for the default).
std::string output_or_default(const std::string& output, const std::string& stem) {
  if (!output.empty()) {
    const auto slash = output.find_last_of('/');
    if (slash != std::string::npos && slash > 0) make_directories(output.substr(0, slash));
    return output;
  }
  make_directories("data");
  return "data/" + stem + ".h5";
}

// The file name without folder and extension.
std::string stem_of(const std::string& path) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  return name.substr(0, name.rfind('.'));
}

int import_idx(const IdxArguments& a) {
  const std::string output = output_or_default(a.output, a.kind);
  Communicator world = Communicator::world();
  ImportResult result;
  collective_check(world, [&] {
    if (world.rank() == 0) result = import_idx_dataset(a.kind, a.source, output);
  });
  if (world.rank() == 0) {
    std::printf("imported %s: %lld train and %lld test samples -> %s\n", a.kind.c_str(),
                static_cast<long long>(result.train_count), static_cast<long long>(result.test_count), output.c_str());
  }
  return 0;
}

int import_cifar_batches(const CifarArguments& a) {
  const std::string output =
      output_or_default(a.output, a.kind + (a.kind == "cifar100" && a.labels == "coarse" ? "-coarse" : ""));
  Communicator world = Communicator::world();
  ImportResult result;
  collective_check(world, [&] {
    if (world.rank() == 0) result = import_cifar(a.kind, a.source, output, a.labels);
  });
  if (world.rank() == 0) {
    std::printf("imported %s: %lld train and %lld test samples -> %s\n", a.kind.c_str(),
                static_cast<long long>(result.train_count), static_cast<long long>(result.test_count), output.c_str());
  }
  return 0;
}

int import_table(CsvImportOptions o) {
  o.output = output_or_default(o.output, stem_of(o.path));
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

int import_series(SeriesArguments a) {
  const bool synthetic = a.kind == "synthetic";
  WindowOptions& o = a.window;
  o.output = output_or_default(o.output, synthetic ? "synthetic-" + a.series : stem_of(a.path));
  Communicator world = Communicator::world();
  ImportResult result;
  Series series;
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    series = synthetic ? synthetic_series(a.series, a.length, a.seed) : read_series_csv(a.path, a.target, a.drop);
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

void add_idx_kind(CLI::App& import, const std::string& kind, const std::string& what, Commands& commands) {
  auto a = std::make_shared<IdxArguments>();
  a->kind = kind;
  a->source = default_idx_source(kind);
  CLI::App* app = import.add_subcommand(kind, what + " from idx files (plain or .gz)");
  app->group("Data set kinds");
  app->add_option("--source", a->source, "folder with train-images-idx3-ubyte[.gz] and friends")
      ->type_name("DIR")
      ->capture_default_str();
  app->add_option("--output", a->output, "HDF5 file to write (default: data/" + kind + ".h5)")->type_name("FILE.h5");
  commands.push_back({app, [a] { return import_idx(*a); }});
}

void add_cifar_kind(CLI::App& import, const std::string& kind, Commands& commands) {
  auto a = std::make_shared<CifarArguments>();
  a->kind = kind;
  const bool hundred = kind == "cifar100";
  CLI::App* app = import.add_subcommand(
      kind, std::string(hundred ? "CIFAR-100" : "CIFAR-10") + " from the official binary batches");
  app->group("Data set kinds");
  app->footer(hundred ? "The unpacked cifar-100-binary folder: train.bin, test.bin and, when present,\n"
                        "fine_label_names.txt / coarse_label_names.txt for the class names."
                      : "The unpacked cifar-10-batches-bin folder: data_batch_1.bin .. data_batch_5.bin,\n"
                        "test_batch.bin and, when present, batches.meta.txt for the class names.");
  app->add_option("--source", a->source, "folder with the binary batches")->required()->type_name("DIR");
  if (hundred) {
    app->add_option("--labels", a->labels, "fine (100 classes) or coarse (20 superclasses)")
        ->check(one_of({"fine", "coarse"}))
        ->type_name("KIND")
        ->capture_default_str();
  }
  app->add_option("--output", a->output,
                  "HDF5 file to write (default: data/" + kind + ".h5" +
                      (hundred ? std::string(", data/cifar100-coarse.h5 with --labels coarse)") : std::string(")")))
      ->type_name("FILE.h5");
  commands.push_back({app, [a] { return import_cifar_batches(*a); }});
}

void add_csv_kind(CLI::App& import, Commands& commands) {
  auto o = std::make_shared<CsvImportOptions>();
  CLI::App* app = import.add_subcommand("csv", "a CSV table (regression or classification)");
  app->group("Data set kinds");
  app->footer(
      "A header row; every column but the label is a numeric feature. --task regression reads a\n"
      "numeric label; classification takes label strings as class names. Without --test, a\n"
      "seeded --test-fraction of the rows is the test split.");
  app->add_option("FILE", o->path, "the table")->required()->type_name("FILE.csv");
  app->add_option("--label", o->label, "the label column")->required()->type_name("COLUMN");
  app->add_option("--task", o->task, "what the label is")
      ->check(one_of({"regression", "classification"}))
      ->type_name("TASK")
      ->capture_default_str();
  CLI::Option* test = app->add_option("--test", o->test_path, "a separate test table (same header)");
  test->type_name("TEST.csv");
  app->add_option("--test-fraction", o->test_fraction, "share of the rows held out as the test split")
      ->check(open_fraction())
      ->type_name("F")
      ->capture_default_str()
      ->excludes(test);
  app->add_option("--seed", o->seed, "seed of the test split's permutation")
      ->check(integer_at_least(0))
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--name", o->name, "the data set's name attribute (default: the table's file name)");
  app->add_option("--output", o->output, "HDF5 file to write (default: data/STEM.h5)")->type_name("FILE.h5");
  commands.push_back({app, [o] { return import_table(*o); }});
}

void add_window_options(CLI::App* app, WindowOptions& o) {
  app->add_option("--window", o.window, "steps of all variables per sample")
      ->check(integer_at_least(1))
      ->type_name("W")
      ->capture_default_str();
  app->add_option("--horizon", o.horizon, "steps from a window's end to its (first) target")
      ->check(integer_at_least(1))
      ->type_name("H")
      ->capture_default_str();
  app->add_option("--span", o.span, "consecutive target steps H .. H+S-1 per sample (targets [N, S])")
      ->check(integer_at_least(1))
      ->type_name("S")
      ->capture_default_str();
  app->add_option("--test-fraction", o.test_fraction, "the last share of the steps, which holds the test targets")
      ->check(open_fraction())
      ->type_name("F")
      ->capture_default_str();
}

void add_series_kind(CLI::App& import, const std::string& kind, Commands& commands) {
  auto a = std::make_shared<SeriesArguments>();
  a->kind = kind;
  const bool synthetic = kind == "synthetic";
  CLI::App* app = import.add_subcommand(
      kind, synthetic ? "a reproducible hourly series, cut into windows" : "a CSV series, cut into windows");
  app->group("Data set kinds");
  app->footer(
      "Windows of W steps of all variables, each with the target variable H steps after the\n"
      "window as its target, or with --span S the S steps H .. H+S-1 after it (a multi-step\n"
      "forecast); the last --test-fraction of the steps holds the test targets.");
  if (synthetic) {
    app->add_option("SERIES", a->series,
                    "seasonal: trend, daily and weekly seasons, noise; cpu: a server's CPU allocation\n"
                    "(office hours, nightly backup, random batch jobs)")
        ->required()
        ->check(one_of({"seasonal", "cpu"}));
    app->add_option("--length", a->length, "steps (hours; the default is two years)")
        ->check(integer_at_least(2))
        ->type_name("L")
        ->capture_default_str();
    app->add_option("--seed", a->seed, "the series' random seed")
        ->check(integer_at_least(0))
        ->type_name("N")
        ->capture_default_str();
  } else {
    app->add_option("FILE", a->path, "one row per step; every column but --drop is a variable")
        ->required()
        ->type_name("FILE.csv");
    app->add_option("--target", a->target, "the variable to forecast")->required()->type_name("COLUMN");
    app->add_option("--drop", a->drop, "columns that are not variables (a time stamp)")
        ->delimiter(',')
        ->allow_extra_args(false)
        ->type_name("COL,COL");
  }
  add_window_options(app, a->window);
  app->add_option("--output", a->window.output,
                  synthetic ? "HDF5 file to write (default: data/synthetic-SERIES.h5)"
                            : "HDF5 file to write (default: data/STEM.h5)")
      ->type_name("FILE.h5");
  commands.push_back({app, [a] { return import_series(*a); }});
}

}  // namespace

void add_import_command(CLI::App& parent, Commands& commands) {
  CLI::App* import = parent.add_subcommand("import", "import a data set into hpctrain's HDF5 layout");
  import->require_subcommand(0, 1);
  commands.push_back({import, {}, false, "data set kind"});
  add_idx_kind(*import, "fashion-mnist", "Fashion-MNIST", commands);
  add_idx_kind(*import, "mnist", "MNIST", commands);
  add_cifar_kind(*import, "cifar10", commands);
  add_cifar_kind(*import, "cifar100", commands);
  add_csv_kind(*import, commands);
  add_series_kind(*import, "timeseries", commands);
  add_series_kind(*import, "synthetic", commands);
  import->footer(
      "Converts idx files, CIFAR binary batches or a CSV table or series into hpctrain's HDF5 layout\n"
      "(docs/data-format.md). `hpctrain import KIND --help` lists a kind's options.");
}

}  // namespace hpctrain
