"""Sharded checkpoints written in parallel against the first rank gathering and writing alone
(issue 20, item 3), for the 25M-parameter ResNet (configs/resnet_wide.json, SGD with momentum:
8 bytes of state per parameter) and the 106M-parameter Transformer (configs/transformer_100m.json,
AdamW: 12 bytes per parameter), on 2 ranks with parallel.shard=optimizer.

Write: a run of --steps optimizer steps with checkpoint.every_steps=1 (every step, and at the
end) and checkpoint.parallel_write true (every rank its slices, format version 2) or false (rank 0
gathers, builds the file in memory, writes it); the figure is report.json's
training.checkpoint_seconds over training.checkpoints: the whole collective write, hashing,
fsync, rename and the read-back verification before pruning. Read: a resume of the newest such
checkpoint with nothing left to train, training.restore_seconds, either sharded (each rank reads
the parameters and only its chunks of the optimizer state) or unsharded (each rank reads the
whole state), in alternating order. Peak RSS per rank from report.json. Modes alternate within
each repeat; medians.

    bench/checkpoint_sharded.py [--repeats 3] [--json FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, provenance, wait_for_quiet, write_results  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MODELS = {
    "resnet_wide (25.1M)": ["configs/resnet_wide.json", "train.batch_size=16"],
    "transformer_100m (106.4M)": ["configs/transformer_100m.json", "train.batch_size=8"],
}


def hpctrain(a, run_dir, config, *extra):
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", a.binary, "train", os.path.join(ROOT, config),
           "data.path=" + a.data, "data.verify_hashes=false", "data.limit_train=64", "train.epochs=1",
           "train.test_at_end=false", "run.progress=none", "run.threads=1", "parallel.shard=optimizer",
           "checkpoint.every_steps=1", "checkpoint.keep=1", "run.dir=" + run_dir, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    rep = json.load(open(os.path.join(run_dir, "report.json")))
    return rep, " ".join(cmd)


def one_repeat(a, config, parallel, work):
    run_dir = os.path.join(work, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    load = wait_for_quiet(a.max_load, a.max_wait)
    rep, cmd = hpctrain(a, run_dir, config[0], config[1], f"train.max_steps={a.steps}",
                        f"checkpoint.parallel_write={'true' if parallel else 'false'}")
    t = rep["training"]
    out = {"parallel_write": parallel, "load_1min_before": load, "command": cmd,
           "checkpoints": t["checkpoints"], "checkpoint_seconds": t["checkpoint_seconds"],
           "seconds_per_checkpoint": t["checkpoint_seconds"] / max(t["checkpoints"], 1),
           "peak_rss_bytes": rep["memory"]["peak_rss_bytes"]["per_rank"],
           "file_bytes": sum(os.path.getsize(os.path.join(run_dir, "checkpoints", f))
                             for f in os.listdir(os.path.join(run_dir, "checkpoints")))}
    for shard in ("optimizer", "none") if parallel else ("none", "optimizer"):  # both orders
        wait_for_quiet(a.max_load, a.max_wait)
        rep, cmd = hpctrain(a, run_dir, config[0], config[1], f"train.max_steps={a.steps}",
                            "checkpoint.resume=auto", "parallel.shard=" + shard)
        out[f"restore_seconds_shard_{shard}"] = rep["training"]["restore_seconds"]
        out[f"restore_peak_rss_bytes_shard_{shard}"] = rep["memory"]["peak_rss_bytes"]["per_rank"]
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated keys of MODELS")
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one under /tmp)")
    p.add_argument("--json")
    a = p.parse_args()
    info = provenance()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    work = tempfile.mkdtemp(prefix="hpctrain_ckbench_", dir=a.work)
    results = {}
    for name in a.models.split(","):
        runs = {True: [], False: []}
        for i in range(a.repeats):
            for parallel in (True, False) if i % 2 == 0 else (False, True):
                r = one_repeat(a, MODELS[name], parallel, work)
                r["repeat"] = i
                runs[parallel].append(r)
                print(f"{name} repeat {i} parallel_write={parallel}: {r['seconds_per_checkpoint']:.2f} s per "
                      f"checkpoint of {r['file_bytes'] / 1e6:.0f} MB, peak RSS "
                      f"{[round(x / 2**20) for x in r['peak_rss_bytes']]} MiB; restore sharded "
                      f"{r['restore_seconds_shard_optimizer']:.2f} s, whole {r['restore_seconds_shard_none']:.2f} s, "
                      f"load {r['load_1min_before']:.2f}", flush=True)
        med = {}
        for parallel, rs in runs.items():
            key = "parallel" if parallel else "serial"
            med[key] = {"seconds_per_checkpoint": statistics.median(r["seconds_per_checkpoint"] for r in rs),
                        "max_peak_rss_bytes": statistics.median(max(r["peak_rss_bytes"]) for r in rs),
                        "rank0_peak_rss_bytes": statistics.median(r["peak_rss_bytes"][0] for r in rs)}
        every = runs[True] + runs[False]
        med["restore_seconds_shard_optimizer"] = statistics.median(r["restore_seconds_shard_optimizer"] for r in every)
        med["restore_seconds_shard_none"] = statistics.median(r["restore_seconds_shard_none"] for r in every)
        med["write_ratio_parallel_over_serial"] = (med["parallel"]["seconds_per_checkpoint"] /
                                                   med["serial"]["seconds_per_checkpoint"])
        med["read_ratio_chunks_over_whole"] = med["restore_seconds_shard_optimizer"] / med["restore_seconds_shard_none"]
        med["file_bytes"] = runs[True][0]["file_bytes"]
        results[name] = {"medians": med, "runs": runs[True] + runs[False]}
        print(f"{name}: write {med['parallel']['seconds_per_checkpoint']:.2f} s parallel vs "
              f"{med['serial']['seconds_per_checkpoint']:.2f} s serial (ratio {med['write_ratio_parallel_over_serial']:.2f});"
              f" restore {med['restore_seconds_shard_optimizer']:.2f} s chunks vs {med['restore_seconds_shard_none']:.2f}"
              f" s whole; rank 0 peak RSS {med['parallel']['rank0_peak_rss_bytes'] / 2**20:.0f} vs "
              f"{med['serial']['rank0_peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    out = dict(info, steps=a.steps, repeats=a.repeats, ranks=2, shard="optimizer", results=results)
    path = a.json or write_results("checkpoint-sharded", out)
    if a.json:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    print("results:", path)


if __name__ == "__main__":
    main()
