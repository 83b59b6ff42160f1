"""Strong scaling on the cores of one machine, 1 to N ranks (issue 23's target: >= 85%
efficiency from 1 to 16 ranks of a 16-core machine, for a model with enough work per rank),
and `hpctrain plan` predicting each rank count from the 1-rank profile and a `bench allreduce`
of the largest count, so the model explains the gap where efficiency falls short.

The benchmark MLP of bench/scaling_model.py (--width, 3 hidden layers, global batch --batch,
--steps steps, one thread per rank, ranks bound to cores), --repeats runs per rank count, the
median step kept. Efficiency = samples/s at R / (R x samples/s at 1 rank). Needs R cores for R
ranks (on fewer, mpiexec oversubscribes and the figures say nothing): a 2-core machine checks
the script with --ranks 1,2; the 16-core device node runs it (bench/gpu_node.sh scaling).

    .venv/bin/python bench/strong_scaling.py [--ranks 1,2,4,8,16] [--width 1024] [--batch 512]
        [--steps 60] [--repeats 3] [--json FILE]
"""
import argparse
import json
import os
import tempfile

from _common import ROOT, provenance, save_json
from scaling_model import sh, train


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--ranks", default="1,2,4,8,16")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-load", type=float, default=99)
    p.add_argument("--max-wait", type=float, default=0)
    p.add_argument("--json")
    a = p.parse_args()
    counts = [int(r) for r in a.ranks.split(",")]
    if counts[0] != 1:
        raise SystemExit("--ranks must start at 1 (the efficiency's reference and the model's profile)")
    raw = tempfile.mkdtemp(prefix="hpctrain_strong_")
    rows = []
    for r in counts:
        launch = ["mpiexec", "-n", str(r), "--bind-to", "core", "--map-by", "core"] + (
            ["--oversubscribe"] if r > (os.cpu_count() or 1) else [])
        reports = [train(a, launch, raw, f"r{r}-{i}") for i in range(a.repeats)]
        reports.sort(key=lambda x: x["time_per_step_ms"]["total_mean"])
        median = reports[len(reports) // 2]
        json.dump(median, open(os.path.join(raw, f"r{r}.json"), "w"))
        step = median["time_per_step_ms"]["total_mean"]
        rows.append({"ranks": r, "step_ms": step, "runs_ms": [x["time_per_step_ms"]["total_mean"] for x in reports],
                     "samples_per_s": a.batch / step * 1e3,
                     "phases_ms": {k: median["time_per_step_ms"][k]["mean"]
                                   for k in ("data", "forward", "backward", "comm_exposed", "optimizer")}})
    one = rows[0]["samples_per_s"]
    for row in rows:
        row["efficiency"] = row["samples_per_s"] / (row["ranks"] * one)
    # The model: every count from the 1-rank profile, links from a bench at the largest count.
    top = counts[-1]
    model = json.load(open(os.path.join(raw, f"r{top}.json")))["model"]
    s = int(model["parameters"] * 4 / max(1, model.get("gradient_buckets", 1))) // 64 * 4  # S/16 .. 4S
    intra = os.path.join(raw, "intra.json")
    if top > 1:
        sh(["mpiexec", "-n", str(top), "--bind-to", "core", "--map-by", "core"] +
           (["--oversubscribe"] if top > (os.cpu_count() or 1) else []) +
           [a.bin, "bench", "allreduce", "--min-bytes", str(s), "--max-bytes", str(s * 64), "--repeats", "5",
            "--gap-ms", f"{rows[0]['step_ms']:.3f}", "--json", intra])
    config = os.path.join(ROOT, "configs", "fashion_mnist_mlp.json")
    for row in rows:
        pred = os.path.join(raw, f"plan-{row['ranks']}.json")
        sh([a.bin, "plan", config, "data.path=" + a.data, f"model.hidden=[{a.width},{a.width},{a.width}]",
            "model.dropout=0", "model.batch_norm=false", "--profile", os.path.join(raw, "r1.json"), "--nodes", "1",
            "--ranks-per-node", str(row["ranks"]), "--json", pred] + (["--intra", intra] if top > 1 else []))
        q = json.load(open(pred))["predictions"][0]
        row["predicted_step_ms"] = q["step_ms"]
        row["predicted_efficiency"] = q["efficiency"]
        row["error"] = q["step_ms"] / row["step_ms"] - 1
        print(f"{row['ranks']:3d} ranks: step {row['step_ms']:8.2f} ms (runs {', '.join(f'{x:.2f}' for x in row['runs_ms'])}),"
              f" {row['samples_per_s']:9.0f} samples/s, efficiency {row['efficiency']:.3f}; predicted "
              f"{row['predicted_step_ms']:8.2f} ms ({row['error'] * 100:+.1f}%), efficiency "
              f"{row['predicted_efficiency']:.3f}", flush=True)
    save_json(a.json, dict(provenance(), width=a.width, batch=a.batch, steps=a.steps, repeats=a.repeats,
                           cpus=os.cpu_count(), raw=raw, rows=rows))


if __name__ == "__main__":
    main()
