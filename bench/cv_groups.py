"""Cross-validation over rank groups against one fold alone (the target in
docs/benchmarks.md: k folds on k groups finish in <= 1.1x the time of one fold).

For k folds it runs, alternating, R times each:
  grouped:    mpirun -np k hpctrain train CONFIG cv.folds=k cv.ranks_per_group=1 run.threads=1
  sequential: mpirun -np 1 hpctrain train CONFIG cv.folds=k run.threads=1
Every fold trains on one rank with one thread, bound to one core, in both. The time of one fold alone is the
sequential run's wall time minus all of its folds but one (start-up, data load and
reports counted once, one fold's training): T1 = wall_seq - (k - 1) * mean(fold wall).
The ratio is wall_grouped / T1; the medians over the repetitions are printed.

Usage: .venv/bin/python bench/cv_groups.py [--folds 2] [--repeats 3] [overrides ...]
Needs at least k cores for the grouped run to mean anything."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(np_, folds, extra, tag):
    out = tempfile.mkdtemp(prefix="hpctrain_cvbench_" + tag + "_")
    # Each rank bound to one core in both runs, so a fold has one core whether alone or not.
    cmd = ["mpirun", "--allow-run-as-root", "--bind-to", "core", "--map-by", "core", "-np", str(np_),
           os.path.join(ROOT, "build", "hpctrain"),
           "train", os.path.join(ROOT, "configs", "fashion_mnist_cnn.json"), "cv.folds=%d" % folds,
           "cv.ranks_per_group=1", "run.threads=1", "run.progress=none", "run.dir=" + out] + extra
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.load(open(os.path.join(out, "cv_report.json"))), " ".join(cmd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*",
                    default=["data.limit_train=12000", "data.verify_hashes=false", "train.epochs=2"])
    a = ap.parse_args()
    k = a.folds
    ratios, grouped_s, one_s = [], [], []
    for i in range(a.repeats):
        g, gcmd = run(k, k, a.overrides, "grouped")
        s, scmd = run(1, k, a.overrides, "sequential")
        fold_walls = [f["wall_seconds"] for f in s["folds_detail"]]
        t1 = s["wall_seconds"] - (k - 1) * statistics.mean(fold_walls)
        grouped_s.append(g["wall_seconds"])
        one_s.append(t1)
        ratios.append(g["wall_seconds"] / t1)
        print(f"repeat {i}: {k} folds on {k} groups {g['wall_seconds']:.2f} s; one fold alone {t1:.2f} s "
              f"(sequential {s['wall_seconds']:.2f} s); ratio {ratios[-1]:.3f}", flush=True)
    print(f"\nmachine: {platform.node()}, {os.cpu_count()} CPUs")
    print(f"grouped:    {gcmd}\nsequential: {scmd}")
    print(f"median over {a.repeats}: grouped {statistics.median(grouped_s):.2f} s, one fold "
          f"{statistics.median(one_s):.2f} s, ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
