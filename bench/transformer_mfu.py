"""Model FLOPs utilization of hpctrain's Transformer on one GPU, next to PyTorch eager on the
same model, data, batch and precision.

    python bench/transformer_mfu.py [--embed 1024 --heads 16 --layers 12 --tokens 256]
                                    [--batch 64 --steps 60 --precision bf16] [--peak-tflops 989]
                                    [--out bench-mfu.json] [--binary build/hpctrain] [key.path=value ...]

The data are synthetic table rows of --tokens features (each feature is one token of the
Transformer's table embedding), imported with `hpctrain import csv`. Model FLOPs per sample
are those of training a Transformer: 6 x parameters x tokens for the matrix products plus
12 x layers x tokens^2 x width for attention (the PaLM appendix's count, non-causal);
MFU = model FLOPs x samples/s / peak (--peak-tflops: 989 for an H100 SXM in dense bf16).
Both sides report samples/s over the steps after the first 10 (warm-up). --causal makes both
sides a GPT-style decoder (model.causal: causal attention, the last token's state to the
head); the FLOP count stays the non-causal one, as Megatron-LM's and PaLM's MFU count it.
Needs a GPU."""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "build", "hpctrain")
sys.path.insert(0, os.path.join(ROOT, "analysis"))
from hpctrain_model import Transformer  # noqa: E402


def make_data(work, rows, tokens):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, tokens)).astype(np.float32)
    y = (x[:, :8].sum(1) > 0).astype(int)
    path = os.path.join(work, "table.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(tokens)] + ["label"])
        for row, label in zip(x, y):
            w.writerow([f"{v:.6g}" for v in row] + [label])
    h5 = os.path.join(work, "table.h5")
    subprocess.run([BINARY, "import", "csv", path, "--label", "label", "--task",
                    "classification", "--test-fraction", "0.1", "--output", h5], check=True, stdout=subprocess.DEVNULL)
    return h5, x, y


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--embed", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--causal", action="store_true", help="a GPT-style decoder: model.causal=true on both sides "
                   "(causal attention, the last token's state to the head)")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--out", default="bench-mfu.json")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--profile", metavar="DIR", help="also trace steps 20-24 of each side into DIR "
                   "(hpctrain.json, pytorch.json; compare with analysis/profile_summary.py); rates then include it")
    a, overrides = p.parse_known_args()
    global BINARY
    BINARY = a.binary
    if not torch.cuda.is_available():
        sys.exit("transformer_mfu: no GPU visible")
    work = tempfile.mkdtemp(prefix="mfu_")
    rows = a.batch * (a.steps + 2)
    h5, x, y = make_data(work, rows, a.tokens)
    model_keys = [f"model.name=transformer", f"model.embed_dim={a.embed}", f"model.heads={a.heads}",
                  f"model.layers={a.layers}", "model.dropout=0", "model.mlp_ratio=4",
                  f"model.causal={str(a.causal).lower()}"]
    run_dir = os.path.join(work, "run")
    profile_keys = ["run.profile_steps=5", "run.profile_start=20"] if a.profile else []
    subprocess.run([BINARY, "train", os.path.join(ROOT, "configs",
                    "diabetes_mlp.json"), "data.path=" + h5, "data.val_fraction=0", "data.verify_hashes=false",
                    "train.loss=cross_entropy", f"train.batch_size={a.batch}", "train.epochs=1",
                    f"train.max_steps={a.steps}", "train.test_at_end=false", "train.test_every_epoch=false",
                    "device.type=cuda", f"precision.mode={a.precision}", "run.progress=none", "run.log_every=10",
                    "run.dir=" + run_dir] + model_keys + overrides + profile_keys, check=True, stdout=subprocess.DEVNULL)
    steps = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if '"type":"step"' in line]
    report = json.load(open(os.path.join(run_dir, "report.json")))
    params = report["model"]["parameters"]
    # samples/s between the step logged at 10 and the last one (after warm-up)
    first, last = steps[0], steps[-1]
    if a.profile:
        os.makedirs(a.profile, exist_ok=True)
        shutil.copy(os.path.join(run_dir, "profile_rank0.json"), os.path.join(a.profile, "hpctrain.json"))
    ours = (last["step"] - first["step"]) * a.batch / (last["elapsed_s"] - first["elapsed_s"])

    m = {"embed_dim": a.embed, "heads": a.heads, "layers": a.layers, "mlp_ratio": 4.0, "patch_size": 1,
         "dropout": 0.0, "causal": a.causal}
    model = Transformer(m, [a.tokens], 2).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xs, ys = torch.from_numpy(x).pin_memory(), torch.from_numpy(y).pin_memory()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=a.precision == "fp16")
    times = []
    profiler = None
    for s in range(a.steps):
        if a.profile and s == 20:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                          torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        xb = xs[s * a.batch:(s + 1) * a.batch].cuda(non_blocking=True)
        yb = ys[s * a.batch:(s + 1) * a.batch].cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if profiler is not None and s == 24:
            torch.cuda.synchronize()
            profiler.__exit__(None, None, None)
            profiler.export_chrome_trace(os.path.join(a.profile, "pytorch.json"))
            profiler = None
        if s in (10, a.steps - 1):
            torch.cuda.synchronize()
            times.append(time.perf_counter())
    theirs = (a.steps - 1 - 10) * a.batch / (times[1] - times[0])
    flops = 6 * params * a.tokens + 12 * a.layers * a.tokens ** 2 * a.embed
    peak = a.peak_tflops * 1e12
    result = {"gpu": torch.cuda.get_device_name(0), "parameters": params, "tokens": a.tokens, "batch": a.batch,
              "precision": a.precision, "causal": a.causal, "overrides": overrides, "model_flops_per_sample": flops,
              "hpctrain_attention_backend": report["training"].get("attention_backend"),
              "hpctrain_samples_per_s": ours, "pytorch_samples_per_s": theirs, "ratio": ours / theirs,
              "hpctrain_mfu": flops * ours / peak, "pytorch_mfu": flops * theirs / peak}
    print(json.dumps(result, indent=1))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
