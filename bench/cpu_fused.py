"""hpctrain's fused CPU operators against LibTorch's layers, in one binary: the same training
run with the defaults (model.fused_kernels=true, optimizer.fused=auto: the fused batch norm,
ReLU and pooling, the counter-based dropout and ATen's fused AdamW) and with both off
(LibTorch's layers and dropout and its per-parameter AdamW loop, what hpctrain ran before),
alternating, for each recipe and rank count; samples/s over the training loop and the
per-step phases from report.json, medians of --repeats pairs (docs/benchmarks.md, "CPU step").
With --baseline-binary the baseline is another build run with the defaults ("layers" in the
output is then that build).

    .venv/bin/python bench/cpu_fused.py --repeats 5
    .venv/bin/python bench/cpu_fused.py --recipes cnn --ranks 1,2 --repeats 3 --samples 12800

Recipes: cnn (configs/fashion_mnist_cnn.json at batch 64 per rank), fast (the fast recipe,
configs/fashion_mnist_fast.json, batch 256 per rank as it is) and cnn_bf16 (the default CNN
with precision.mode=bf16 on both sides: bfloat16 convolutions on AMX/AVX512-BF16 CPUs), mlp
(configs/fashion_mnist_mlp.json) and transformer (the small one of bench/cpu_ops.py, dropout
0.1), where the fused part is the dropout (models/CounterDropout.hpp), resnet and resnet_bf16
(bench/cpu_ops.py's small ResNet, float32 and bf16), where it is batch norm + add + ReLU
(models/NormAct.hpp), lstm (configs/forecast_lstm.json on a synthetic series, as
bench/cpu_ops.py runs it), where it is the dropout between and after the layers; 1 intra-op
thread per rank. mlp_bf16 and transformer_bf16: those under precision.mode=bf16.
Writes bench/results/<date>-cpu-fused.json."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, provenance, wait_for_quiet, write_results  # noqa: E402

TRANSFORMER = ["model.name=transformer", "model.embed_dim=96", "model.heads=3", "model.layers=2", "model.patch_size=4",
               "model.dropout=0.1"]  # bench/cpu_ops.py's small Transformer
RESNET = ["model.name=resnet", "model.blocks=[1,1,1]", "model.width=16"]  # bench/cpu_ops.py's small ResNet
RECIPES = {  # name: (config, batch per rank, overrides on both sides)
    "cnn": ("configs/fashion_mnist_cnn.json", 64, []),
    "fast": ("configs/fashion_mnist_fast.json", 256, []),
    "cnn_bf16": ("configs/fashion_mnist_cnn.json", 64, ["precision.mode=bf16"]),
    "mlp": ("configs/fashion_mnist_mlp.json", 256, []),
    "transformer": ("configs/fashion_mnist_cnn.json", 64, TRANSFORMER),
    "transformer_bf16": ("configs/fashion_mnist_cnn.json", 64, TRANSFORMER + ["precision.mode=bf16"]),
    "resnet": ("configs/fashion_mnist_cnn.json", 64, RESNET),
    "resnet_bf16": ("configs/fashion_mnist_cnn.json", 64, RESNET + ["precision.mode=bf16"]),
    "lstm": ("configs/forecast_lstm.json", 128, []),
    "mlp_bf16": ("configs/fashion_mnist_mlp.json", 256, ["precision.mode=bf16"]),  # on a synthetic series made for the run
}
SERIES = []  # data.path=... of the lstm recipe's series, once made
PHASES = ("data", "forward", "backward", "comm_exposed", "optimizer", "total_mean")


def train(binary, recipe, ranks, fused, samples):
    config, batch, extra = RECIPES[recipe]
    run_dir = tempfile.mkdtemp(prefix="hpctrain_fusedbench_")
    cmd = [binary, "train", os.path.join(ROOT, config), "run.threads=1", "run.progress=none", "run.dir=" + run_dir,
           f"train.batch_size={batch * ranks}",
           "data.verify_hashes=false", f"data.limit_train={samples}", "data.val_fraction=0", "train.epochs=1",
           "train.test_at_end=false", "train.test_every_epoch=false"] + extra + (SERIES if recipe == "lstm" else [])
    if not fused:
        cmd += ["model.fused_kernels=false", "optimizer.fused=off"]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    steps = report["time_per_step_ms"]
    phases = {k: (steps[k]["mean"] if isinstance(steps[k], dict) else steps[k]) for k in PHASES if k in steps}
    return {"samples_per_s": report["training"]["samples_per_s"], "phases_ms": phases}, " ".join(cmd)


def median_phases(runs):
    return {k: statistics.median(r["phases_ms"][k] for r in runs) for k in runs[0]["phases_ms"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    ap.add_argument("--baseline-binary", help="instead of the layers, this other build with the defaults as the "
                                              "baseline (a change measured against the build before it)")
    ap.add_argument("--recipes", default="cnn,fast")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=12800, help="training samples per run (data.limit_train)")
    ap.add_argument("--max-load", type=float, default=0.5)
    a = ap.parse_args()
    if "lstm" in a.recipes.split(","):  # as bench/cpu_ops.py makes it: windows of 24 steps
        path = os.path.join(tempfile.mkdtemp(prefix="hpctrain_fusedbench_"), "synthetic-cpu.h5")
        subprocess.run([a.binary, "import", "synthetic", "cpu", "--length", str(int(a.samples / 0.75) + 100),
                        "--window", "24", "--seed", "2", "--output", path], check=True, capture_output=True, cwd=ROOT)
        SERIES.append("data.path=" + path)
    load = wait_for_quiet(a.max_load, 300)
    results, commands = [], {}
    for recipe in a.recipes.split(","):
        for ranks in (int(r) for r in a.ranks.split(",")):
            runs = {True: [], False: []}
            for i in range(a.repeats):
                for fused in (False, True):  # alternating, baseline first
                    if a.baseline_binary and not fused:
                        r, commands[f"{recipe}/{ranks}/baseline"] = train(a.baseline_binary, recipe, ranks, True,
                                                                          a.samples)
                    else:
                        r, commands[f"{recipe}/{ranks}/{fused}"] = train(a.binary, recipe, ranks, fused, a.samples)
                    runs[fused].append(r)
                f, u = runs[True][-1]["samples_per_s"], runs[False][-1]["samples_per_s"]
                print(f"{recipe} {ranks} rank(s) pair {i}: layers {u:.0f}, fused {f:.0f} samples/s ({f / u:.3f}x)",
                      flush=True)
            ratios = [f["samples_per_s"] / u["samples_per_s"] for f, u in zip(runs[True], runs[False])]
            entry = {"recipe": recipe, "ranks": ranks, "threads_per_rank": 1, "batch_per_rank": RECIPES[recipe][1],
                     "overrides": RECIPES[recipe][2],
                     "layers": {"samples_per_s": [r["samples_per_s"] for r in runs[False]],
                                "median_phases_ms": median_phases(runs[False])},
                     "fused": {"samples_per_s": [r["samples_per_s"] for r in runs[True]],
                               "median_phases_ms": median_phases(runs[True])},
                     "ratios": ratios, "median_ratio": statistics.median(ratios),
                     "median_step_ratio": (median_phases(runs[True])["total_mean"] /
                                           median_phases(runs[False])["total_mean"])}
            results.append(entry)
            print(f"{recipe} {ranks} rank(s): median {entry['median_ratio']:.3f}x samples/s, step "
                  f"{entry['median_step_ratio']:.3f}x; phases layers {entry['layers']['median_phases_ms']}, "
                  f"fused {entry['fused']['median_phases_ms']}", flush=True)
    out = dict(provenance(), benchmark="cpu_fused", baseline=a.baseline_binary or "the layers (model.fused_kernels=false "
                                                                              "optimizer.fused=off)", load_average_at_start=load, load_average_at_end=os.getloadavg(),
               repeats=a.repeats, samples=a.samples, train_commands=commands, results=results)
    print("wrote", write_results("cpu-fused", out))


if __name__ == "__main__":
    main()
