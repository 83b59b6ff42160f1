"""Model FLOPs utilization of hpctrain's Transformer on one GPU, next to PyTorch eager on the
same model, data, batch and precision.

    python bench/transformer_mfu.py [--embed 1024 --heads 16 --layers 12 --tokens 256]
                                    [--batch 64 --steps 60 --precision bf16] [--peak-tflops 989]
                                    [--causal] [--gelu erf|tanh] [--compile default,max-autotune-no-cudagraphs]
                                    [--out bench-mfu.json] [--binary build/hpctrain] [key.path=value ...]

The data are synthetic table rows of --tokens features (each feature is one token of the
Transformer's table embedding), imported with `hpctrain import csv`. Model FLOPs per sample
are those of training a Transformer: 6 x parameters x tokens for the matrix products plus
12 x layers x tokens^2 x width for attention (the PaLM appendix's count, non-causal);
MFU = model FLOPs x samples/s / peak (--peak-tflops: 989 for an H100 SXM in dense bf16).
Both sides report samples/s over the steps after the first 10 (warm-up); PyTorch runs eager,
then compiled with torch.compile in each --compile mode (the stronger peer: ratio_vs_compile is
hpctrain's rate over the best compiled one; compilation and autotuning fall in the warm-up). --causal makes both
sides a GPT-style decoder (model.causal: causal attention, the last token's state to the
head); the FLOP count stays the non-causal one, as Megatron-LM's and PaLM's MFU count it.
--gelu tanh gives both sides GPT-2's tanh GELU (model.gelu), whose MLP hpctrain runs with cuBLASLt
epilogues.
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

sys.path.insert(0, os.path.join(ROOT, "bench"))
from _common import provenance  # noqa: E402


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


def peer_rate(model, xs, ys, a, trace=None):
    """PyTorch's side: samples/s of `model` (eager or compiled) over the steps after the first 10,
    AdamW, autocast to --precision (fp16 with a gradient scaler); `trace`: steps 20-24 profiled
    into that file."""
    dev = next(model.parameters()).device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "fp16")
    times, profiler = [], None
    for s in range(a.steps):
        if trace and s == 20:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                          torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        xb = xs[s * a.batch:(s + 1) * a.batch].to(dev, non_blocking=True)
        yb = ys[s * a.batch:(s + 1) * a.batch].to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if profiler is not None and s == 24:
            sync()
            profiler.__exit__(None, None, None)
            profiler.export_chrome_trace(trace)
            profiler = None
        if s in (10, a.steps - 1):
            sync()
            times.append(time.perf_counter())
    return (a.steps - 1 - 10) * a.batch / (times[1] - times[0])


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
    p.add_argument("--gelu", choices=["erf", "tanh"], default="erf", help="model.gelu on both sides: tanh is "
                   "GPT-2's approximation, whose MLP hpctrain runs with cuBLASLt epilogues (model.fused_kernels)")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--out", default="bench-mfu.json")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--compile", default="default,max-autotune-no-cudagraphs",
                   help="torch.compile modes timed as further PyTorch peers (comma list; none: eager only)")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to try the script on a machine without a GPU")
    p.add_argument("--profile", metavar="DIR", help="also trace steps 20-24 of each side into DIR "
                   "(hpctrain.json, pytorch.json; compare with analysis/profile_summary.py); rates then include it")
    a, overrides = p.parse_known_args()
    global BINARY
    BINARY = a.binary
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("transformer_mfu: no GPU visible")
    work = tempfile.mkdtemp(prefix="mfu_")
    rows = a.batch * (a.steps + 2)
    h5, x, y = make_data(work, rows, a.tokens)
    model_keys = [f"model.name=transformer", f"model.embed_dim={a.embed}", f"model.heads={a.heads}",
                  f"model.layers={a.layers}", "model.dropout=0", "model.mlp_ratio=4",
                  f"model.causal={str(a.causal).lower()}", f"model.gelu={a.gelu}"]
    run_dir = os.path.join(work, "run")
    profile_keys = ["run.profile_steps=5", "run.profile_start=20"] if a.profile else []
    subprocess.run([BINARY, "train", os.path.join(ROOT, "configs",
                    "diabetes_mlp.json"), "data.path=" + h5, "data.val_fraction=0", "data.verify_hashes=false",
                    "train.loss=cross_entropy", f"train.batch_size={a.batch}", "train.epochs=1",
                    f"train.max_steps={a.steps}", "train.test_at_end=false", "train.test_every_epoch=false",
                    f"device.type={a.device}", f"precision.mode={a.precision}", "run.progress=none", "run.log_every=10",
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
         "dropout": 0.0, "causal": a.causal, "gelu": a.gelu}
    dev = torch.device(a.device)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    if dev.type == "cuda":
        xs, ys = xs.pin_memory(), ys.pin_memory()
    torch.manual_seed(0)
    theirs = peer_rate(Transformer(m, [a.tokens], 2).to(dev), xs, ys, a,
                       os.path.join(a.profile, "pytorch.json") if a.profile else None)
    # torch.compile, the stronger peer: the same model, data and optimizer, compiled in each mode;
    # compilation (and autotuning) happens in the warm-up steps, which are not timed.
    compiled = {}
    for mode in [c for c in a.compile.split(",") if c and c != "none"]:
        torch.manual_seed(0)
        net = torch.compile(Transformer(m, [a.tokens], 2).to(dev), mode=None if mode == "default" else mode)
        compiled[mode] = peer_rate(net, xs, ys, a, None)
        torch._dynamo.reset()
    flops = 6 * params * a.tokens + 12 * a.layers * a.tokens ** 2 * a.embed
    peak = a.peak_tflops * 1e12
    best_compiled = max(compiled.values()) if compiled else None
    result = {**provenance(), "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
              "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
              "parameters": params, "tokens": a.tokens, "batch": a.batch,
              "precision": a.precision, "causal": a.causal, "gelu": a.gelu, "overrides": overrides,
              "model_flops_per_sample": flops,
              "flop_formula": "6 x parameters x tokens + 12 x layers x tokens^2 x width (non-causal)",
              "hpctrain_attention_backend": report["training"].get("attention_backend"),
              "hpctrain_samples_per_s": ours, "pytorch_samples_per_s": theirs, "ratio": ours / theirs,
              "ratio_vs_eager": ours / theirs,
              "pytorch_compile_samples_per_s": compiled,
              "ratio_vs_compile": ours / best_compiled if best_compiled else None,
              "ratio_vs_compile_per_mode": {k: ours / v for k, v in compiled.items()},
              "mfu": flops * ours / peak,
              "hpctrain_mfu": flops * ours / peak, "pytorch_mfu": flops * theirs / peak,
              "pytorch_compile_mfu": {k: flops * v / peak for k, v in compiled.items()}}
    print(json.dumps(result, indent=1))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
