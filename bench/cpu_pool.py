"""CPU max pooling: LibTorch's NCHW kernel against a channels-last forward with the NCHW
backward (models/Pooling.hpp), at the operator and over whole training runs.

1. Operators (the .venv's torch, the LibTorch hpctrain links; one thread): max_pool2d
   forward on the default CNN's two pooling shapes, NCHW against channels-last (conversions
   included), alternating, median of --op-repeats; then the default CNN's training step in
   Python three ways (NCHW, the channels-last-forward pooling, the whole model
   channels-last) and whether the pooling variant's gradients are bitwise equal.
2. Whole runs: `hpctrain train configs/fashion_mnist_cnn.json` on 1 rank, 1 thread, with a
   baseline binary (built before the change) and the candidate, alternating --repeats times;
   samples/s from report.json (training-loop time), medians.

Usage: .venv/bin/python bench/cpu_pool.py --baseline /tmp/hpctrain_before --candidate build/hpctrain
Writes bench/results/<date>-cpu-pool.json."""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_seconds, write_results  # noqa: E402


def median_ms(f, repeats):
    return median_seconds(f, repeats) * 1e3


def operators(repeats):
    torch.set_num_threads(1)
    out = []
    for shape in ((64, 32, 28, 28), (64, 64, 14, 14)):
        x = torch.randn(*shape)
        nchw, cl = [], []
        for _ in range(5):  # alternating blocks
            nchw.append(median_ms(lambda: F.max_pool2d(x, 2), repeats))
            cl.append(median_ms(lambda: F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous(),
                                repeats))
        out.append({"shape": list(shape), "nchw_forward_ms": statistics.median(nchw),
                    "channels_last_forward_ms": statistics.median(cl),
                    "speedup": statistics.median(nchw) / statistics.median(cl)})
    return out


class ChannelsLastForwardPool(torch.autograd.Function):
    """The Python twin of models/Pooling.cpp."""

    @staticmethod
    def forward(ctx, x):
        out, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), [2, 2],
                                                          [2, 2])
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx, g):
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(g.contiguous(), x, [2, 2], [2, 2], [0, 0], [1, 1],
                                                               False, idx)


class Pool(torch.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return ChannelsLastForwardPool.apply(x) if self.mode == "cl_forward" else F.max_pool2d(x, 2)


def default_cnn(pool):
    """The default CNN (configs/fashion_mnist_cnn.json) without dropout."""
    layers, c = [], 1
    for o in (32, 64):
        layers += [torch.nn.Conv2d(c, o, 3, padding=1, bias=False), torch.nn.BatchNorm2d(o), torch.nn.ReLU(),
                   Pool(pool)]
        c = o
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))


def steps(repeats):
    """One training step (forward + backward, batch 64) of the default CNN three ways."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    models = {"nchw": default_cnn("nchw"), "cl_forward_pool": default_cnn("cl_forward"),
              "whole_model_channels_last": default_cnn("nchw")}
    for m in models.values():
        m.load_state_dict(models["nchw"].state_dict())
    models["whole_model_channels_last"] = models["whole_model_channels_last"].to(memory_format=torch.channels_last)
    inputs = {k: x.contiguous(memory_format=torch.channels_last) if k.startswith("whole") else x for k in models}

    def step(k):
        models[k].zero_grad()
        F.cross_entropy(models[k](inputs[k]), y).backward()

    times = {k: [] for k in models}
    for _ in range(5):
        for k in models:
            times[k].append(median_ms(lambda: step(k), repeats))
    grads = {}
    for k in models:
        step(k)
        grads[k] = [p.grad.clone() for p in models[k].parameters()]
    equal = all(torch.equal(a, b) for a, b in zip(grads["nchw"], grads["cl_forward_pool"]))
    return {"step_ms": {k: statistics.median(v) for k, v in times.items()},
            "cl_forward_pool_gradients_bitwise_equal": equal}


def train(binary, overrides):
    run_dir = tempfile.mkdtemp(prefix="hpctrain_poolbench_")
    cmd = [binary, "train", os.path.join(ROOT, "configs", "fashion_mnist_cnn.json"), "run.threads=1",
           "run.progress=none", "run.dir=" + run_dir] + overrides
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    report = json.load(open(os.path.join(run_dir, "report.json")))
    return report["training"]["samples_per_s"], " ".join(cmd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--candidate", default=os.path.join(ROOT, "build", "hpctrain"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--op-repeats", type=int, default=20)
    ap.add_argument("overrides", nargs="*", default=["data.limit_train=6400", "data.verify_hashes=false",
                                                     "train.epochs=1", "train.test_at_end=false"])
    a = ap.parse_args()
    ops = operators(a.op_repeats)
    for o in ops:
        print(f"max_pool2d {o['shape']}: NCHW {o['nchw_forward_ms']:.2f} ms, channels-last "
              f"{o['channels_last_forward_ms']:.2f} ms ({o['speedup']:.2f}x)", flush=True)
    step = steps(a.op_repeats)
    print(f"default CNN step (Python, same LibTorch): {step}", flush=True)
    base, cand, ratios = [], [], []
    cmd = ""
    for i in range(a.repeats):
        b, _ = train(a.baseline, a.overrides)
        c, cmd = train(a.candidate, a.overrides)
        base.append(b)
        cand.append(c)
        ratios.append(c / b)
        print(f"repeat {i}: baseline {b:.0f} samples/s, candidate {c:.0f} samples/s, {c / b:.3f}x", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    result = {
        "benchmark": "cpu_pool",
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                    "torch": torch.__version__},
        "command": "bench/cpu_pool.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
                                                    if k != "overrides") + " " + " ".join(a.overrides),
        "train_command": cmd,
        "operators": ops,
        "python_step": step,
        "train": {"baseline_samples_per_s": base, "candidate_samples_per_s": cand, "ratios": ratios,
                  "median_ratio": statistics.median(ratios)},
    }
    print(f"median over {a.repeats}: baseline {statistics.median(base):.0f}, candidate {statistics.median(cand):.0f} "
          f"samples/s, ratio {statistics.median(ratios):.3f}")
    print("wrote", write_results("cpu-pool", result))


if __name__ == "__main__":
    main()
