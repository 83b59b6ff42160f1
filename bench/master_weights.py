"""precision.params=low (GEMM weights in the low type, fp32 masters) against precision.params=fp32
(fp32 weights that autocast casts every step), the same model, data, batch and precision, run
alternately in one invocation: training samples/s (report.json, after the first epoch's start)
and the step phases, per side the median over --repeats.

    python bench/master_weights.py [--device cpu|cuda] [--precision bf16] [--repeats 5]
                                   [--out bench/results/DATE-master-weights.json] [key.path=value ...]

Defaults: the Transformer of docs/benchmarks.md's CPU runs on Fashion-MNIST (data/fashion-mnist.h5),
one rank. The two sides compute the same arithmetic (docs/gpu.md): the test losses are recorded
and must agree."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, provenance, save_json, wait_for_quiet  # noqa: E402

MODEL = ["model.name=transformer", "model.embed_dim=128", "model.heads=4", "model.layers=4", "model.patch_size=7",
         "model.dropout=0"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--limit", type=int, default=6000, help="training samples per run")
    p.add_argument("--out")
    a, overrides = p.parse_known_args()
    work = tempfile.mkdtemp(prefix="hpctrain_master_weights_")
    base = ["train", os.path.join(ROOT, "configs", "fashion_mnist_fast.json"), "data.path=" + a.data,
            "data.verify_hashes=false", "data.limit_train=" + str(a.limit), "train.epochs=1", "run.progress=none",
            "device.type=" + a.device, "precision.mode=" + a.precision, "run.threads=0"] + MODEL + overrides
    runs = {"fp32": [], "low": []}
    for i in range(a.repeats):
        for side in ("fp32", "low"):
            load = wait_for_quiet(1.5, 60)
            run_dir = os.path.join(work, f"{side}_{i}")
            subprocess.run([a.binary] + base + ["precision.params=" + side, "run.dir=" + run_dir], check=True,
                           stdout=subprocess.DEVNULL)
            report = json.load(open(os.path.join(run_dir, "report.json")))
            step = report["time_per_step_ms"]
            runs[side].append({"samples_per_s": report["training"]["samples_per_s"],
                               "step_ms": {**{k: step[k]["mean"] for k in ("forward", "backward", "optimizer")},
                                           "total": step["total_mean"]},
                               "test_loss": report["final"]["test_loss"],
                               "parameter_bytes": report["parallel"]["shard"]["parameter_bytes"][0],
                               "load_before": load})
            print(side, i, runs[side][-1]["samples_per_s"], flush=True)
    med = {side: statistics.median(r["samples_per_s"] for r in runs[side]) for side in runs}
    ratios = [lo["samples_per_s"] / hi["samples_per_s"] for lo, hi in zip(runs["low"], runs["fp32"])]
    result = {**provenance(), "device": a.device, "precision": a.precision, "model": MODEL, "overrides": overrides,
              "runs": runs, "samples_per_s": med, "ratio_low_vs_fp32": med["low"] / med["fp32"],
              "ratio_per_pair": ratios, "ratio_per_pair_median": statistics.median(ratios),
              "same_test_loss": len({r["test_loss"] for side in runs for r in runs[side]}) == 1}
    print(json.dumps({k: result[k] for k in ("samples_per_s", "ratio_low_vs_fp32", "ratio_per_pair_median",
                                             "same_test_loss")}))
    save_json(a.out, result)


if __name__ == "__main__":
    main()
