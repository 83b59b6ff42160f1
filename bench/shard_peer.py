#!/usr/bin/env python3
"""Sharded data parallelism (issue 20): hpctrain's parallel.shard none / optimizer / gradients /
parameters against each other (target: stages 1 and 2 within 5% of unsharded step time at 2 ranks) and
against PyTorch's DDP, DDP + ZeroRedundancyOptimizer (ZeRO-1) and FSDP2 fully_shard (ZeRO-3)
on CPU with gloo (target: >= 1.3x their samples/s at <= their peak memory per rank), the
same MLP, batch, AdamW and one intra-op thread per rank, alternating the order every repeat:

  hpctrain: mpiexec -n 2 --bind-to core build/hpctrain train configs/fashion_mnist_mlp.json
            model.hidden=[W x L] (no dropout/batch norm) train.batch_size=2*ROWS parallel.shard=S
  torch:    mpiexec -n 2 --bind-to core .venv/bin/python bench/torch_zero_mlp.py --mode M

samples/s = steps * global batch / training wall time (hpctrain: report.json
training.samples_per_s); peak RSS per rank (hpctrain: report.json memory.peak_rss_bytes,
torch: ru_maxrss); optimizer state bytes per rank (hpctrain: parallel.shard; torch: the
local state tensors). Medians over --repeats.

    .venv/bin/python bench/shard_peer.py [--repeats 3] [--json bench/results/DATE-shard-peer.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import ROOT, provenance, wait_for_quiet

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPI = ["mpiexec", "-n", "2", "--bind-to", "core", "--map-by", "core"]


def run_hpctrain(a, shard):
    run_dir = tempfile.mkdtemp(prefix="hpctrain_shardpeer_")
    batch = 2 * a.rows
    hidden = ",".join([str(a.width)] * a.layers)
    cmd = MPI + [a.binary, "train", os.path.join(ROOT, "configs", "fashion_mnist_mlp.json"), "data.path=" + a.data,
                 f"model.hidden=[{hidden}]", "model.dropout=0", "model.batch_norm=false", "data.verify_hashes=false",
                 "data.val_fraction=0", f"data.limit_train={batch * a.steps}", "train.epochs=1",
                 "train.test_at_end=false", "train.early_stop_patience=0", f"train.batch_size={batch}",
                 "optimizer.name=adamw", "optimizer.lr=0.001", "optimizer.weight_decay=0.01",
                 "schedule.name=constant", "schedule.warmup_steps=0", "checkpoint.at_end=false", "run.progress=none",
                 "run.threads=1", "run.log_every=1", "parallel.shard=" + shard, "run.dir=" + run_dir]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rep = json.load(open(os.path.join(run_dir, "report.json")))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        losses = [json.loads(x)["loss"] for x in f if '"type":"step"' in x]
    return {"samples_per_s": rep["training"]["samples_per_s"], "train_seconds": rep["training"]["train_seconds"],
            "losses": losses, "peak_rss_bytes": rep["memory"]["peak_rss_bytes"]["per_rank"],
            "optimizer_state_bytes": rep["parallel"]["shard"]["optimizer_state_bytes"],
            "gradient_bytes": rep["parallel"]["shard"]["gradient_bytes"],
            "parameter_bytes": rep["parallel"]["shard"]["parameter_bytes"],
            "parameter_window_peak_bytes": rep["parallel"]["shard"].get("parameter_window_peak_bytes"),
            "exposed_comm_share": rep.get("communication", {}).get("exposed_share_of_step"),
            "command": " ".join(cmd)}


def run_torch(a, mode):
    out = tempfile.mktemp(prefix="torch_shardpeer_", suffix=".json")
    cmd = MPI + [a.python, os.path.join(ROOT, "bench", "torch_zero_mlp.py"), "--mode", mode, "--data", a.data,
                 "--width", str(a.width), "--layers", str(a.layers), "--rows", str(a.rows), "--steps", str(a.steps),
                 "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        return {"failed": r.stderr[-2000:], "command": " ".join(cmd)}
    res = json.load(open(out))
    res["command"] = " ".join(cmd)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rows", type=int, default=64, help="samples per rank per step")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--json")
    a = p.parse_args()
    info = provenance()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    sides = [("hpctrain none", run_hpctrain, "none"), ("hpctrain optimizer", run_hpctrain, "optimizer"),
             ("hpctrain gradients", run_hpctrain, "gradients"), ("hpctrain parameters", run_hpctrain, "parameters"),
             ("torch ddp", run_torch, "ddp"),
             ("torch zero1", run_torch, "zero1"), ("torch fsdp2", run_torch, "fsdp2")]
    runs = {name: [] for name, _, _ in sides}
    for i in range(a.repeats):
        for name, fn, arg in sides if i % 2 == 0 else list(reversed(sides)):
            load = wait_for_quiet(a.max_load, a.max_wait)
            r = fn(a, arg)
            r["load_1min_before"], r["repeat"] = load, i
            runs[name].append(r)
            if "failed" in r:
                print(f"repeat {i} {name:18s}: failed", flush=True)
                continue
            print(f"repeat {i} {name:18s}: {r['samples_per_s']:.0f} samples/s, peak RSS "
                  f"{max(r['peak_rss_bytes']) / 2**20:.0f} MiB, optimizer state "
                  f"{max(r['optimizer_state_bytes']) / 2**20:.1f} MiB/rank, load {load:.2f}", flush=True)
    med, rss, opt = {}, {}, {}
    for name, rs in runs.items():
        ok = [r for r in rs if "failed" not in r]
        if ok:
            med[name] = statistics.median(r["samples_per_s"] for r in ok)
            rss[name] = statistics.median(max(r["peak_rss_bytes"]) for r in ok)
            opt[name] = statistics.median(max(r["optimizer_state_bytes"]) for r in ok)
    ratios = {}
    for mine, peer in (("hpctrain optimizer", "hpctrain none"), ("hpctrain gradients", "hpctrain none"),
                       ("hpctrain parameters", "hpctrain none"), ("hpctrain parameters", "torch fsdp2"),
                       ("hpctrain none", "torch ddp"), ("hpctrain optimizer", "torch zero1"),
                       ("hpctrain gradients", "torch zero1"), ("hpctrain gradients", "torch fsdp2")):
        if mine in med and peer in med:
            ratios[f"{mine} / {peer}"] = {"samples_per_s": med[mine] / med[peer], "peak_rss": rss[mine] / rss[peer]}
    print("\nmedian samples/s, peak RSS per rank (MiB), optimizer state per rank (MiB):")
    for name in med:
        print(f"  {name:18s} {med[name]:8.0f} {rss[name] / 2**20:8.0f} {opt[name] / 2**20:8.1f}")
    for k, v in ratios.items():
        print(f"  {k:40s} samples/s x{v['samples_per_s']:.2f}, peak RSS x{v['peak_rss']:.2f}")
    if a.json:
        loads = [r["load_1min_before"] for rs in runs.values() for r in rs]
        out = dict(info, repeats=a.repeats, width=a.width, layers=a.layers, rows_per_rank=a.rows, steps=a.steps,
                   ranks=2, load_1min={"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
                   median_samples_per_s=med, median_peak_rss_bytes=rss, median_optimizer_state_bytes=opt,
                   ratios=ratios, runs=runs)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
