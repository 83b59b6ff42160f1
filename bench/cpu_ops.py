"""Per-operator CPU profile of each model family's training step against this machine's peaks
(issue 26; docs/benchmarks.md, "Per-operator CPU profile").

1. Peaks, with the .venv's torch (the LibTorch hpctrain links, same oneDNN/MKL kernels), at
   each thread count: sgemm GFLOP/s of a --gemm-n square float32 matmul (2n^3 per call), and
   memory bandwidth of 256 MiB float32 arrays: copy (b.copy_(a); read + write, 2 x 256 MiB
   per call) and triad (a = b + s*c; 3 x 256 MiB). Medians of --peak-repeats, measured
   before and after the runs; the better of the two is the peak (a busy machine only lowers it).
2. Runs `hpctrain train` per family and thread count with run.profile_start=--warmup and
   run.profile_steps=--steps (a Kineto trace of those steps), the run cut to the steps it
   needs; analysis/op_profile.py turns the trace into a per-operator table (phase, calls,
   self and inclusive ms per step, FLOPs or bytes, GFLOP/s or GB/s, % of the sgemm or copy
   peak at that thread count). Families: cnn (configs/fashion_mnist_cnn.json, batch 64), fast
   (configs/fashion_mnist_fast.json), mlp (configs/fashion_mnist_mlp.json), resnet and
   transformer (small ones on Fashion-MNIST, overrides in FAMILIES), lstm
   (configs/forecast_lstm.json on a series from `hpctrain import synthetic cpu`).
3. Writes --out (default bench/results/<date>-cpu-ops.json): provenance, the binary's size and
   time, peaks, and per family and thread count the command, report.json's time_per_step_ms
   means and samples/s (the whole run, warm-up included), the traced steps' phase times (in
   operators, and wall), the op rows, and how quiet the machine was (busy share before the
   run, CPU seconds other processes used during it). Prints the top operators of each run.

Before the peaks the script waits for the 1-minute load to fall below --max-load, before each
measurement for a second with at most --max-busy of the CPUs busy (up to --max-wait s each).
The profiler records shapes, which costs time per operator; phase_wall_ms against
report_phase_ms shows how much. Time outside any operator (a custom autograd function's own
kernels) is the difference between phase_wall_ms and phase_ms.

Usage: .venv/bin/python bench/cpu_ops.py --binary /work/main/build/hpctrain
           [--families cnn,fast,mlp,resnet,transformer,lstm] [--threads 1,2] [--steps 10]
           [--warmup 15] [--top 12] [--out FILE] [--max-load 0.5] [--max-busy 0.1]
About 5 minutes on 2 cores with the defaults."""
import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "analysis"))
from _common import ROOT, median_seconds, provenance, wait_for_quiet  # noqa: E402
import op_profile  # noqa: E402

FAMILIES = {  # name -> (config, overrides); batch sizes are the configs' unless given
    "cnn": ("configs/fashion_mnist_cnn.json", ["train.batch_size=64"]),
    "fast": ("configs/fashion_mnist_fast.json", []),
    "mlp": ("configs/fashion_mnist_mlp.json", []),
    "resnet": ("configs/fashion_mnist_cnn.json", ["model.name=resnet", "model.blocks=[1,1,1]", "model.width=16",
                                                  "train.batch_size=64"]),
    "transformer": ("configs/fashion_mnist_cnn.json", ["model.name=transformer", "model.embed_dim=96",
                                                       "model.heads=3", "model.layers=2", "model.patch_size=4",
                                                       "model.dropout=0.1", "train.batch_size=64"]),
    "lstm": ("configs/forecast_lstm.json", []),
}


def cpu_busy_s():
    """CPU seconds this machine has been busy (all CPUs, /proc/stat), and this process's
    children's CPU seconds: their difference over a run is what other processes used."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), children.ru_utime + children.ru_stime


def wait_until_idle(max_busy, max_wait):
    """Waits up to max_wait s for a second in which at most max_busy of all CPUs were busy (our
    own previous run's load average does not count, unlike wait_for_quiet's); returns the last
    second's share."""
    t0 = time.time()
    while True:
        b0, _ = cpu_busy_s()
        time.sleep(1)
        share = (cpu_busy_s()[0] - b0) / os.cpu_count()
        if share <= max_busy or time.time() - t0 > max_wait:
            return share




def peaks(threads, gemm_n, repeats):
    """sgemm GFLOP/s and copy/triad GB/s at `threads` intra-op threads."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    c = torch.empty(gemm_n, gemm_n)
    sgemm = 2 * gemm_n ** 3 / median_seconds(lambda: torch.mm(a, b, out=c), repeats) / 1e9
    n = 64 * 2 ** 20  # 256 MiB of float32
    x, y, z = torch.rand(n), torch.empty(n), torch.rand(n)
    copy = 2 * 4 * n / median_seconds(lambda: y.copy_(x), repeats) / 1e9
    triad = 3 * 4 * n / median_seconds(lambda: torch.add(x, z, alpha=3.0, out=y), repeats) / 1e9
    return {"threads": threads, "sgemm_gflops": sgemm, "copy_gbs": copy, "triad_gbs": triad,
            "gemm_n": gemm_n, "array_mib": 4 * n / 2 ** 20, "repeats": repeats, "torch": torch.__version__}


def measure_peaks(threads, a):
    out = {}
    for t in threads:
        wait_until_idle(a.max_busy, a.max_wait)
        out[str(t)] = peaks(t, a.gemm_n, a.peak_repeats)
    return out


def apply_peaks(rows, peak):
    """% of peak for op rows: GFLOP/s against sgemm, GB/s against copy."""
    for r in rows:
        rate, top = ((r["gflops"], peak["sgemm_gflops"]) if r["gflops"] is not None
                     else (r["gbs"], peak["copy_gbs"]))
        r["pct_of_peak"] = None if rate is None else 100 * rate / top


def synthetic_series(binary, work, a):
    """A synthetic server-load series long enough for the lstm run's steps (the import keeps
    about 80% of the windows for training)."""
    path = os.path.join(work, "synthetic-cpu.h5")
    batch = json.load(open(os.path.join(ROOT, FAMILIES["lstm"][0])))["train"]["batch_size"]
    length = int(batch * (a.warmup + a.steps + 2) / 0.75) + 100
    cmd = [binary, "import", "synthetic", "cpu", "--length", str(length), "--window", "24", "--seed", "2",
           "--output", path]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return path


def family_command(binary, family, threads, a, data, series):
    config, extra = FAMILIES[family]
    run_dir = tempfile.mkdtemp(prefix=f"hpctrain_ops_{family}_{threads}t_")
    path = series if family == "lstm" else data
    batch = next((int(o.split("=")[1]) for o in extra if o.startswith("train.batch_size=")), None)
    if batch is None:
        batch = json.load(open(os.path.join(ROOT, config)))["train"]["batch_size"]
    limit = batch * (a.warmup + a.steps + 2)  # the run ends soon after the traced steps
    run = [f"run.threads={threads}", "run.progress=none", f"run.profile_start={a.warmup}",
           f"run.profile_steps={a.steps}", f"run.dir={run_dir}"]
    short = ["train.epochs=1", "train.test_at_end=false", "train.test_every_epoch=false", "data.val_fraction=0",
             f"data.limit_train={limit}", "data.verify_hashes=false", f"data.path={path}"]
    overrides = extra + short + run + a.set
    return [binary, "train", os.path.join(ROOT, config)] + overrides, run_dir


def run_family(binary, family, threads, a, data, series):
    cmd, run_dir = family_command(binary, family, threads, a, data, series)
    busy, load = wait_until_idle(a.max_busy, a.max_wait), os.getloadavg()[0]
    t0, (b0, c0) = time.time(), cpu_busy_s()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    b1, c1 = cpu_busy_s()
    quiet = {"busy_share_before": busy, "load_1min_before": load,
             "other_cpu_s": max(0.0, (b1 - b0) - (c1 - c0)), "run_cpu_s": c1 - c0}
    try:
        return _entry(family, threads, cmd, run_dir, p, a, quiet, time.time() - t0)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _entry(family, threads, cmd, run_dir, p, a, quiet, seconds):
    trace = os.path.join(run_dir, "profile_rank0.json")
    if p.returncode != 0 or not os.path.exists(trace):
        why = "" if p.returncode else "no profile_rank0.json (fewer steps than --warmup + --steps?)\n"
        return {"family": family, "threads": threads, "error": why + (p.stdout + p.stderr)[-2000:],
                "command": " ".join(cmd)}
    report = json.load(open(os.path.join(run_dir, "report.json")))
    prof = op_profile.profile(trace, a.steps)
    phases = {k: v["mean"] for k, v in report["time_per_step_ms"].items() if isinstance(v, dict) and "mean" in v}
    return {"family": family, "threads": threads, "command": " ".join(cmd).replace(ROOT + os.sep, ""),
            "seconds": seconds, "quiet": quiet, "model": report.get("model"),
            "global_batch": report["training"]["global_batch"], "samples_per_s": report["training"]["samples_per_s"],
            "report_phase_ms": phases, "traced_steps": prof["steps"], "steps_detected": prof["steps_detected"],
            "phase_method": prof["phase_method"], "phase_ms": prof["phase_ms"],
            "phase_wall_ms": prof["phase_wall_ms"], "ops": prof["ops"]}


def dumps(result):
    """The results JSON, indented, with one operator row per line and its times and rates to 6
    significant digits."""
    def rounded(row):
        return {k: float(f"{v:.6g}") if isinstance(v, float) and k not in ("flops", "bytes") else v
                for k, v in row.items()}
    rows = {}
    for i, run in enumerate(result["runs"]):
        if "ops" in run:
            rows[i], run["ops"] = run["ops"], f"@ops{i}@"
    text = json.dumps(result, indent=1)
    for i, ops in rows.items():
        lines = ",\n".join("   " + json.dumps(rounded(o), separators=(",", ":")) for o in ops)
        text = text.replace(f'"@ops{i}@"', "[\n" + lines + "\n  ]")
        result["runs"][i]["ops"] = ops
    return text + "\n"


def summary(entry, top):
    head = (f"\n== {entry['family']}, {entry['threads']} thread(s): batch {entry['global_batch']}, "
            f"{entry['samples_per_s']:.0f} samples/s, other processes {entry['quiet']['other_cpu_s']:.1f} CPU s "
            f"during the run; report ms/step "
            + ", ".join(f"{k} {v:.1f}" for k, v in entry["report_phase_ms"].items()
                        if k in ("data", "forward", "backward", "optimizer")))
    return head + "\n" + op_profile.table({"steps": entry["traced_steps"], "phase_ms": entry["phase_ms"],
                                           "phase_wall_ms": entry["phase_wall_ms"], "ops": entry["ops"]}, top)


def bounds_table(path):
    """--summarize: each run's phases against the roofline of the peaks its file records."""
    with open(path) as f:
        result = json.load(f)
    print(f"{path}: commit {result['commit'][:10]}, {result['date']}; phase: wall ms, bound ms (FLOPs at the sgemm "
          "peak + bytes at the copy peak), efficiency = bound / wall")
    for entry in result["runs"]:
        if "error" in entry:
            continue
        peak = result["peaks"][str(entry["threads"])]
        b = op_profile.phase_bounds(entry["ops"], entry["phase_wall_ms"], peak["sgemm_gflops"], peak["copy_gbs"])
        print(f"{entry['family']:12s} {entry['threads']} thread(s): " + "; ".join(
            f"{k} {v['wall_ms']:.2f} / {v['bound_ms']:.2f} ms ({100 * v['efficiency']:.0f}%)"
            for k, v in b.items() if k in ("forward", "backward", "optimizer")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="build/hpctrain", help="relative to the repository root, or absolute")
    ap.add_argument("--data", default="data/fashion-mnist.h5", help="Fashion-MNIST HDF5 (relative to the root)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=10, help="traced steps per run")
    ap.add_argument("--warmup", type=int, default=15, help="steps before the trace starts")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--peak-repeats", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--max-load", type=float, default=0.5, help="1-minute load to wait for before the peaks")
    ap.add_argument("--max-busy", type=float, default=0.1,
                    help="before each run, wait for a second with at most this share of the CPUs busy")
    ap.add_argument("--max-wait", type=float, default=60, help="seconds to wait for either")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run (repeatable), e.g. model.fused_kernels=false "
                         "optimizer.fused=off for LibTorch's layers and loop optimizer as the baseline")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  datetime.date.today().isoformat() + "-cpu-ops.json"))
    ap.add_argument("--summarize", metavar="RESULTS_JSON",
                    help="print each run's phases against the peaks' roofline from a results file, and exit")
    a = ap.parse_args()
    if a.summarize:
        return bounds_table(a.summarize)
    binary = a.binary if os.path.isabs(a.binary) else os.path.join(ROOT, a.binary)
    data = a.data if os.path.isabs(a.data) else os.path.join(ROOT, a.data)
    families = [f for f in a.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not os.path.exists(binary):
        sys.exit(f"cpu_ops: unknown families {unknown}" if unknown else f"cpu_ops: no binary {binary}")
    threads = [int(t) for t in a.threads.split(",")]
    st = os.stat(binary)
    modified = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {**provenance(), "benchmark": "cpu-ops", "binary": {"path": binary, "bytes": st.st_size,
                                                                 "modified": modified},
              "steps": a.steps, "warmup": a.warmup, "overrides": a.set, "peaks": {}, "runs": []}
    result["load_1min_at_start"] = wait_for_quiet(a.max_load, a.max_wait)
    first = measure_peaks(threads, a)
    work = tempfile.mkdtemp(prefix="hpctrain_ops_")
    try:
        series = synthetic_series(binary, work, a) if "lstm" in families else None
        for family in families:
            for t in threads:
                entry = run_family(binary, family, t, a, data, series)
                result["runs"].append(entry)
                print(f"{family}, {t} thread(s): " + ("FAILED" if "error" in entry else "done"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    last = measure_peaks(threads, a)
    result["peak_measurements"] = {"start": first, "end": last}
    result["peaks"] = {t: {k: max(v, last[t][k]) if k.endswith(("gflops", "gbs")) else v for k, v in p.items()}
                       for t, p in first.items()}
    for entry in result["runs"]:
        if "error" in entry:
            print(f"\n== {entry['family']}, {entry['threads']} thread(s): FAILED\n{entry['error']}")
            continue
        apply_peaks(entry["ops"], result["peaks"][str(entry["threads"])])
        print(summary(entry, a.top), flush=True)
    print("\npeaks (the better of the measurements before and after the runs): "
          + "; ".join(f"{t} thread(s) sgemm {p['sgemm_gflops']:.1f} GFLOP/s, copy {p['copy_gbs']:.2f} GB/s, "
                      f"triad {p['triad_gbs']:.2f} GB/s" for t, p in result["peaks"].items()))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(dumps(result))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
