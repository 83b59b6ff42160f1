#!/usr/bin/env python3
"""Summarizes Chrome-format profiler traces (hpctrain's run.profile_steps, torch.profiler's
export_chrome_trace): GPU kernel time by kernel and by kind (matrix products, attention,
elementwise and normalization, optimizer, communication, copies) with the GPU's idle share of
the traced window, kernel and operator counts. Two traces are shown side by side, e.g.
hpctrain against the PyTorch program that trains the same model.

    python analysis/profile_summary.py RUN/profile_rank0.json [pytorch.json] [--top 25] [--steps N]
                                       [--json FILE]

--steps divides totals by the number of traced steps (per-step figures); --json also writes
the kinds' figures (ms per step and share of the window, per trace)."""
import argparse
import collections
import json
import sys

# Kinds of GPU work, by kernel name (lower case), first match wins. Matrix products: cuBLAS,
# cuBLASLt (with or without epilogues) and CUTLASS kernels, cuDNN's implicit-GEMM convolutions;
# attention: FlashAttention, the memory-efficient and cuDNN fused-attention kernels.
KINDS = (("communication", ("nccl",)),
         ("copies", ("gpu_memcpy", "gpu_memset", "memcpy", "memset")),
         ("attention", ("flash", "fmha", "attention", "sdpa", "attn")),
         ("matrix products", ("gemm", "cutlass", "xmma", "cublas", "nvjet", "wgmma", "matmul", "splitkreduce")),
         ("optimizer", ("multi_tensor", "adam", "_amp_", "foreach")))
OTHER = "elementwise and normalization"


def kind(name):
    low = name.lower()
    for k, keys in KINDS:
        if any(key in low for key in keys):
            return k
    return OTHER


def kinds(d):
    out = collections.Counter()
    for name, us in d["kernels"].items():
        out[kind(name)] += us
    out["idle"] = max(d["window_us"] - d["busy_us"], 0.0)
    return out


def load(path):
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kernels = collections.Counter()
    kernel_n = collections.Counter()
    ops = 0
    cpu = collections.Counter()  # operator name -> inclusive CPU time
    spans = []
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = str(e.get("cat", "")).lower()
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            name = e.get("name", "?") if cat == "kernel" else cat
            kernels[name] += float(e.get("dur", 0))
            kernel_n[name] += 1
            spans.append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))))
        elif cat == "cpu_op":
            ops += 1
            cpu[e.get("name", "?")] += float(e.get("dur", 0))
    busy = 0.0
    window = 0.0
    if spans:
        spans.sort()
        start, end = spans[0]
        window = max(s[1] for s in spans) - spans[0][0]
        for s, t in spans[1:]:
            if s > end:
                busy += end - start
                start, end = s, t
            else:
                end = max(end, t)
        busy += end - start
    return {"kernels": kernels, "counts": kernel_n, "ops": ops, "cpu": cpu, "busy_us": busy, "window_us": window}


def short(name, width=70):
    return name if len(name) <= width else name[:width - 3] + "..."


def main():
    p = argparse.ArgumentParser()
    p.add_argument("traces", nargs="+")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--cpu", action="store_true", help="CPU operators (inclusive time) instead of GPU kernels; "
                   "the default for traces without GPU kernels")
    p.add_argument("--json", metavar="FILE", help="also write the kinds of GPU work per trace as JSON")
    a = p.parse_args()
    if len(a.traces) > 2:
        sys.exit("profile_summary: one or two traces")
    data = [load(t) for t in a.traces]
    div = 1000.0 * a.steps  # us -> ms per step
    for t, d in zip(a.traces, data):
        total = sum(d["kernels"].values())
        print(f"{t}: GPU busy {d['busy_us'] / div:.2f} ms of a {d['window_us'] / div:.2f} ms window "
              f"({100 * d['busy_us'] / max(d['window_us'], 1e-9):.1f}%), kernel time {total / div:.2f} ms, "
              f"{sum(d['counts'].values()) / a.steps:.0f} kernels and copies, {d['ops'] / a.steps:.0f} CPU operators"
              " per step")
    if any(d["kernels"] for d in data):
        # Kernels of different kinds may overlap (NCCL beside compute), so the kinds can add up to
        # more than the busy time; idle is the window less the busy time.
        rows = ["matrix products", "attention", OTHER, "optimizer", "communication", "copies", "idle"]
        per = [kinds(d) for d in data]
        print("\nms/step (% of window)  " + "  ".join(f"{'trace ' + str(i + 1):>17}" for i in range(len(data)))
              + "  kind")
        for k in rows:
            cols = "  ".join(f"{p[k] / div:9.3f} ({100 * p[k] / max(d['window_us'], 1e-9):4.1f}%)"
                             for p, d in zip(per, data))
            print(f"                        {cols}  {k}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"steps": a.steps, "traces": [
                    {"trace": t, "window_ms": d["window_us"] / div, "busy_ms": d["busy_us"] / div,
                     "kinds_ms": {k: p[k] / div for k in rows},
                     "kinds_share": {k: p[k] / max(d["window_us"], 1e-9) for k in rows}}
                    for t, d, p in zip(a.traces, data, per)]}, f, indent=1)
    elif a.json:
        sys.exit("profile_summary: --json needs traces with GPU kernels")
    field = "cpu" if a.cpu or not any(d["kernels"] for d in data) else "kernels"
    names = collections.Counter()
    for d in data:
        names.update(d[field])
    what = "CPU operator (inclusive)" if field == "cpu" else "kernel"
    header = "ms/step  " + "  ".join(f"{'trace ' + str(i + 1):>9}" for i in range(len(data))) + "  " + what
    print("\n" + header)
    for name, _ in names.most_common(a.top):
        cols = "  ".join(f"{d[field].get(name, 0) / div:9.3f}" for d in data)
        print(f"         {cols}  {short(name)}")


if __name__ == "__main__":
    main()
