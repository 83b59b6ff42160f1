#!/usr/bin/env python3
"""The README's main job (configs/fashion_mnist_cnn.json on 2 ranks) with two hpctrain
binaries, alternating A, B, A, B, ...: test accuracy and training samples/s from each run's
report.json, medians per binary and the ratio B/A. For checking that a change (a refactor,
a build change) leaves the default run's accuracy and speed where they were.

    bench/demo_compare.py --a OLD/hpctrain --b NEW/hpctrain [--repeats 3] [--json OUT]
                          [key.path=value ...]

Prints the machine, the exact command, every run and the medians; --json writes the raw
figures (date, commits, machine, command, runs) for bench/results/.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def commit_of(binary):
    """The commit of the checkout a binary was built in (BIN's folder is CHECKOUT/build)."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    r = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def run_once(binary, data, overrides, run_dir):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpirun", "-np", "2", "--bind-to", "none", binary, "train",
           os.path.join(ROOT, "configs", "fashion_mnist_cnn.json"), "data.path=" + data, "run.dir=" + run_dir,
           "run.progress=none"] + overrides
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    report = json.load(open(os.path.join(run_dir, "report.json")))
    return {"test_accuracy": report["final"]["test_accuracy"], "samples_per_s": report["training"]["samples_per_s"],
            "train_seconds": report["training"]["train_seconds"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="baseline binary")
    p.add_argument("--b", required=True, help="binary under test")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--json", help="write the raw figures here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}"
    command = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    print(f"machine: {machine}\ncommand: {command}")
    runs = {"a": [], "b": []}
    work = tempfile.mkdtemp(prefix="hpctrain_demo_compare_")
    for i in range(args.repeats):
        for side in ("a", "b"):
            fig = run_once(getattr(args, side), args.data, args.overrides, os.path.join(work, f"{side}{i}"))
            runs[side].append(fig)
            print(f"run {i} {side}: test accuracy {fig['test_accuracy']:.4f}, {fig['samples_per_s']:.0f} samples/s")
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in runs[s][0]} for s in runs}
    ratio = med["b"]["samples_per_s"] / med["a"]["samples_per_s"]
    print(f"median a: accuracy {med['a']['test_accuracy']:.4f}, {med['a']['samples_per_s']:.0f} samples/s")
    print(f"median b: accuracy {med['b']['test_accuracy']:.4f}, {med['b']['samples_per_s']:.0f} samples/s")
    print(f"samples/s b/a: {ratio:.3f}")
    if args.json:
        out = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "commit_a": commit_of(args.a), "commit_b": commit_of(args.b), "machine": machine, "command": command,
               "repeats": args.repeats, "runs": runs, "median": med, "samples_per_s_ratio_b_over_a": ratio}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
