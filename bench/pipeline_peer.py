#!/usr/bin/env python3
"""hpctrain's pipeline against torch.distributed.pipelining (issue 19 target: >= 1.3x its
samples/s with matching loss curves), alternating, --repeats times each:

  hpctrain: mpiexec -n 2 --bind-to core build/hpctrain train configs/fashion_mnist_mlp.json
            (4 hidden layers of --width, no dropout/batch norm) parallel.pipeline_stages=2
            parallel.schedule=1f1b parallel.microbatches=M parallel.stage_split=[2] run.threads=1
  torch:    mpiexec -n 2 --bind-to core .venv/bin/python bench/torch_pipelining_mlp.py
            (the same layers split the same way, Schedule1F1B, gloo, 1 thread per rank)

Both: the batch rows * M, --steps AdamW steps (lr 1e-3, weight decay 0.01, constant rate),
Fashion-MNIST training images. samples/s = steps * batch / training wall time (hpctrain:
report.json training.samples_per_s). Losses: every step's (hpctrain: metrics.jsonl step lines,
run.log_every=1). The initial parameters and sample order differ (two RNGs), so the loss
curves agree in trend, not digit for digit. Waits (up to --max-wait s) for the 1-minute load
to fall below --max-load before each run and records it.

    .venv/bin/python bench/pipeline_peer.py [--repeats 3] [--json bench/results/DATE-pipeline-peer.json]
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
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPI = ["mpiexec", "-n", "2", "--bind-to", "core", "--map-by", "core"]


def wait_for_quiet(max_load, max_wait):
    t0 = time.time()
    while os.getloadavg()[0] > max_load and time.time() - t0 < max_wait:
        time.sleep(5)
    return os.getloadavg()[0]


def run_hpctrain(a):
    run_dir = tempfile.mkdtemp(prefix="hpctrain_pipepeer_")
    batch = a.rows * a.microbatches
    cmd = MPI + [a.binary, "train", os.path.join(ROOT, "configs", "fashion_mnist_mlp.json"), "data.path=" + a.data,
                 f"model.hidden=[{a.width},{a.width},{a.width},{a.width}]", "model.dropout=0",
                 "model.batch_norm=false", "data.verify_hashes=false", "data.val_fraction=0",
                 f"data.limit_train={batch * a.steps}", "train.epochs=1", "train.test_at_end=false",
                 "train.early_stop_patience=0", f"train.batch_size={batch}", "schedule.name=constant",
                 "schedule.warmup_steps=0", "checkpoint.at_end=false", "run.progress=none", "run.threads=1",
                 "run.log_every=1", "parallel.pipeline_stages=2", f"parallel.microbatches={a.microbatches}",
                 "parallel.schedule=1f1b", "parallel.stage_split=[2]", "run.dir=" + run_dir]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rep = json.load(open(os.path.join(run_dir, "report.json")))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f if x.strip()]
    losses = [x["loss"] for x in lines if x.get("type") == "step"]
    return {"samples_per_s": rep["training"]["samples_per_s"], "train_seconds": rep["training"]["train_seconds"],
            "losses": losses, "bubble_measured": rep["parallel"]["bubble_measured"], "command": " ".join(cmd)}


def run_torch(a):
    out = tempfile.mktemp(prefix="torch_pipepeer_", suffix=".json")
    cmd = MPI + [a.python, os.path.join(ROOT, "bench", "torch_pipelining_mlp.py"), "--data", a.data, "--width",
                 str(a.width), "--rows", str(a.rows), "--microbatches", str(a.microbatches), "--steps", str(a.steps),
                 "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    res = json.load(open(out))
    res["command"] = " ".join(cmd)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--autogroup-nice", type=int,
                   help="set this session's scheduler autogroup to this nice value first (e.g. -10: the ranks are not "
                        "time-sliced evenly with other sessions' processes; needs root)")
    p.add_argument("--json")
    a = p.parse_args()
    if a.autogroup_nice is not None:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(a.autogroup_nice))
    autogroup = open("/proc/self/autogroup").read().strip() if os.path.exists("/proc/self/autogroup") else ""
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}"
    command = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine}\ncommit: {commit}\ncommand: {command}\nautogroup: {autogroup}", flush=True)
    runs = {"hpctrain": [], "torch": []}
    for i in range(a.repeats):
        for side, fn in (("hpctrain", run_hpctrain), ("torch", run_torch)) if i % 2 == 0 else (
                ("torch", run_torch), ("hpctrain", run_hpctrain)):
            load = wait_for_quiet(a.max_load, a.max_wait)
            r = fn(a)
            r["load_1min_before"] = load
            r["repeat"] = i
            runs[side].append(r)
            print(f"repeat {i} {side:8s}: {r['samples_per_s']:.0f} samples/s, loss first {r['losses'][0]:.4f} "
                  f"last {r['losses'][-1]:.4f}, load {load:.2f}", flush=True)
    med = {side: statistics.median(r["samples_per_s"] for r in rs) for side, rs in runs.items()}
    last = {side: statistics.median(r["losses"][-1] for r in rs) for side, rs in runs.items()}
    ratio = med["hpctrain"] / med["torch"]
    loads = [r["load_1min_before"] for rs in runs.values() for r in rs]
    print(f"\nmedian samples/s: hpctrain {med['hpctrain']:.0f}, torch.distributed.pipelining {med['torch']:.0f}, "
          f"ratio {ratio:.2f}; median last-step loss {last['hpctrain']:.4f} vs {last['torch']:.4f}; "
          f"load {min(loads):.2f}..{max(loads):.2f}")
    if a.json:
        out = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit,
               "machine": machine, "command": command, "autogroup": autogroup, "repeats": a.repeats, "width": a.width, "rows": a.rows,
               "microbatches": a.microbatches, "steps": a.steps,
               "load_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
               "median_samples_per_s": med, "ratio_hpctrain_over_torch": ratio, "median_last_loss": last,
               "runs": runs}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
