"""hpctrain against PyTorch (Python, eager) on one GPU: the same model, data, batch,
optimizer and precision, trained by each in turn; samples/s of each, medians over
repetitions, and their ratio.

    python bench/gpu_peer.py [--config configs/fashion_mnist_cnn.json] [--precision fp32 bf16 fp16]
                             [--epochs 2] [--repeats 3] [--graphs] [--out bench-gpu.json] [key.path=value ...]

--graphs also runs hpctrain with device.cuda_graphs=true in each repetition (same baseline).

The PyTorch side is what a careful PyTorch user writes: the data set in pinned host memory,
per-epoch permutation, batches copied with non_blocking=True, torch.autocast, and for fp16
torch.amp.GradScaler; the model is analysis/hpctrain_model.py's mirror of hpctrain's (same
layers, same initialisation scheme does not matter for speed). Both measure training
samples/s as global samples / training seconds, without evaluation. Needs a GPU."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
from hpctrain_model import Cnn, Mlp  # noqa: E402


def hpctrain_run(args, precision, overrides):
    run_dir = tempfile.mkdtemp(prefix="gpu_peer_")
    cmd = [args.binary, "train", args.config, "device.type=cuda", f"precision.mode={precision}",
           f"train.epochs={args.epochs}", "train.test_at_end=false", "data.val_fraction=0", "run.progress=none",
           "run.dir=" + run_dir] + overrides
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    return report["training"]["samples_per_s"], config


def pytorch_run(config, precision, epochs):
    d = config["data"]
    with h5py.File(os.path.join(ROOT, d["path"]) if not os.path.isabs(d["path"]) else d["path"], "r") as f:
        images = torch.from_numpy(f["/train/images"][:]).float()
        labels = torch.from_numpy(f["/train/labels"][:].astype(np.int64))
    if d["limit_train"] > 0:
        images, labels = images[:d["limit_train"]], labels[:d["limit_train"]]
    if images.dim() == 3:
        images = images.unsqueeze(1)
    mean, std = images.mean(), images.std()
    images = ((images - mean) / std).pin_memory()
    labels = labels.pin_memory()
    m = config["model"]
    kinds = {"mlp": Mlp, "cnn": Cnn}
    model = kinds[m["name"]](m, list(images.shape[1:]), int(labels.max()) + 1).cuda()
    if m.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    o = config["optimizer"]
    opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                            weight_decay=o["weight_decay"])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    batch = config["train"]["batch_size"]
    n = len(images) // batch * batch
    g = torch.Generator().manual_seed(config["train"]["seed"])
    model.train()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)[:n]
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            x = images[idx].pin_memory().cuda(non_blocking=True)
            y = labels[idx].pin_memory().cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    torch.cuda.synchronize()
    return n * epochs / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/fashion_mnist_cnn.json")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--out", default="bench-gpu.json")
    p.add_argument("--graphs", action="store_true", help="also hpctrain with device.cuda_graphs=true")
    args, overrides = p.parse_known_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_peer: no GPU visible")
    results = {"gpu": torch.cuda.get_device_name(0), "config": args.config, "epochs": args.epochs, "rows": []}
    for precision in args.precision:
        ours, graphed, theirs = [], [], []
        for _ in range(args.repeats):  # alternate, so drift hits both
            rate, config = hpctrain_run(args, precision, overrides)
            ours.append(rate)
            if args.graphs:
                graphed.append(hpctrain_run(args, precision, overrides + ["device.cuda_graphs=true"])[0])
            theirs.append(pytorch_run(config, precision, args.epochs))
        row = {"precision": precision, "hpctrain_samples_per_s": statistics.median(ours),
               "pytorch_samples_per_s": statistics.median(theirs), "hpctrain_runs": ours, "pytorch_runs": theirs}
        row["ratio"] = row["hpctrain_samples_per_s"] / row["pytorch_samples_per_s"]
        line = (f"{precision}: hpctrain {row['hpctrain_samples_per_s']:.0f} samples/s, "
                f"PyTorch {row['pytorch_samples_per_s']:.0f} samples/s, ratio {row['ratio']:.3f}")
        if graphed:
            row["hpctrain_graphs_samples_per_s"] = statistics.median(graphed)
            row["hpctrain_graphs_runs"] = graphed
            row["graphs_ratio"] = row["hpctrain_graphs_samples_per_s"] / row["pytorch_samples_per_s"]
            line += (f"; with device.cuda_graphs {row['hpctrain_graphs_samples_per_s']:.0f} samples/s, "
                     f"ratio {row['graphs_ratio']:.3f}")
        results["rows"].append(row)
        print(line, flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
