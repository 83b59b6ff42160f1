"""Convolutions of the default CNN's shapes in NCHW against channels-last (NHWC), float32 and
bfloat16, forward and forward+backward, one thread, with the .venv's torch (the LibTorch
hpctrain links): whether the fused CPU operator should also come in NHWC (docs/benchmarks.md,
"Per-operator CPU profile", the CNN's remaining gap).

    .venv/bin/python bench/cpu_conv_layout.py [--repeats 30] [--batch 64]

Medians of --repeats calls after a warm-up, each layout timed in alternating blocks of 5.
Writes bench/results/<date>-cpu-conv-layout.json."""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_seconds, provenance, wait_for_quiet, write_results  # noqa: E402

SHAPES = ((1, 32, 28), (32, 64, 14), (64, 128, 7))  # in channels, out channels, size: the CNNs' stages


def timings(cin, cout, size, batch, dtype, layout, repeats):
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(dtype)
    x = torch.randn(batch, cin, size, size, dtype=dtype)
    if layout == "nhwc":
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(cin > 1)
    g = torch.randn(batch, cout, size, size, dtype=dtype)

    def step():
        conv(x).backward(g)

    return median_seconds(lambda: conv(x), repeats) * 1e3, median_seconds(step, repeats) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    load = wait_for_quiet(0.5, 120)
    torch.set_num_threads(1)
    rows = []
    for cin, cout, size in SHAPES:
        flops = 2 * a.batch * cout * size * size * cin * 9
        for dtype in (torch.float32, torch.bfloat16):
            blocks = {"nchw": [], "nhwc": []}
            for _ in range(5):
                for layout in blocks:
                    blocks[layout].append(timings(cin, cout, size, a.batch, dtype, layout, a.repeats))
            row = {"in": cin, "out": cout, "size": size, "dtype": str(dtype).replace("torch.", ""), "flops": flops}
            for layout, t in blocks.items():
                fwd = statistics.median(x[0] for x in t)
                both = statistics.median(x[1] for x in t)
                row[layout] = {"forward_ms": fwd, "forward_backward_ms": both}
            row["nchw_over_nhwc_forward"] = row["nchw"]["forward_ms"] / row["nhwc"]["forward_ms"]
            row["nchw_over_nhwc_forward_backward"] = (row["nchw"]["forward_backward_ms"] /
                                                      row["nhwc"]["forward_backward_ms"])
            rows.append(row)
            print(f"{cin}->{cout} {size}x{size} {row['dtype']}: forward NCHW {row['nchw']['forward_ms']:.2f} ms, "
                  f"NHWC {row['nhwc']['forward_ms']:.2f} ms ({row['nchw_over_nhwc_forward']:.2f}x); forward+backward "
                  f"{row['nchw']['forward_backward_ms']:.2f} / {row['nhwc']['forward_backward_ms']:.2f} ms "
                  f"({row['nchw_over_nhwc_forward_backward']:.2f}x)", flush=True)
    out = dict(provenance(), benchmark="cpu_conv_layout", torch=torch.__version__, threads=1, batch=a.batch,
               repeats=a.repeats, load_average_at_start=load, load_average_at_end=os.getloadavg(), rows=rows)
    print("wrote", write_results("cpu-conv-layout", out))


if __name__ == "__main__":
    main()
