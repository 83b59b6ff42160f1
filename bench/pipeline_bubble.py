#!/usr/bin/env python3
"""Pipeline bubble and stage-0 activation memory against the schedules' theory (issue 19,
docs/benchmarks.md "Pipeline schedules").

Runs `hpctrain train` on p ranks as p pipeline stages (--stages, default 2) for every schedule (gpipe, 1f1b,
interleaved with 2 chunks per rank) and m microbatches (default 2, 4, 8, 16) with a fixed
microbatch of --rows samples (train.batch_size = rows * m), so a microbatch costs the same in
every run: the bubble theory (p-1)/(m+p-1), interleaved (p-1)/(v*m+p-1), assumes exactly that,
and GPipe's activations then grow with m while 1F1B's stay at p microbatches.

From each run's report.json `parallel` section: bubble_measured (each rank's idle share of its
forward-backward passes, 1 - (forward + backward) / pass time, averaged over ranks),
bubble_common_window (the same over each step's common window, from the first stage's pass
start to the last stage's pass end, as the theory counts it) with entry_skew_share (the part
of that window the ranks spent entering the step apart), bubble_theory, and stage 0's activation_peak_bytes, in_flight_peak, microbatch_activation_bytes.
The rounds alternate the configurations; every configuration runs --repeats times and the
medians are reported. Before each run the script waits (up to --max-wait s) for the 1-minute
load average to fall below --max-load, and records the load it started at. On a machine
shared with other sessions, --autogroup-nice -10 gives this session's scheduler group
priority (the kernel shares a core between sessions, whatever the ranks' own nice values);
the JSON records the setting.

    .venv/bin/python bench/pipeline_bubble.py [--repeats 3] [--json bench/results/DATE-pipeline-bubble.json]

The model: the MLP config with 2p hidden layers of --width 512 (no dropout, no batch norm),
2 per stage (interleaved: one block per virtual stage). At width 512 the blocks cost the same:
the first block's 784x512 matrix needs no input gradient (2 matrix products per sample:
0.80M multiply-adds), the others' 512x512 need 3 (0.79M), so the stages are balanced, which
the theory assumes. Stage imbalance shows in the per-rank forward/backward seconds recorded.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCHEDULES = ("gpipe", "1f1b", "interleaved")


def load1():
    return os.getloadavg()[0]


def wait_for_quiet(max_load, max_wait):
    t0 = time.time()
    while load1() > max_load and time.time() - t0 < max_wait:
        time.sleep(5)
    return load1()


def overrides_for(schedule, m, a, run_dir):
    # 2 blocks per stage (interleaved: one per virtual stage), all of width --width.
    hidden = ",".join([str(a.width)] * (2 * a.stages))
    split = ",".join(str(2 * s) for s in range(1, a.stages))
    return [f"model.hidden=[{hidden}]", "model.dropout=0", "model.batch_norm=false",
            "data.verify_hashes=false", "data.val_fraction=0", f"data.limit_train={a.rows * m * a.steps}",
            "train.epochs=1", "train.test_at_end=false", "train.early_stop_patience=0", f"train.batch_size={a.rows * m}",
            "schedule.name=constant", "schedule.warmup_steps=0", "checkpoint.at_end=false", "run.progress=none",
            "run.threads=1", f"parallel.pipeline_stages={a.stages}", f"parallel.microbatches={m}",
            f"parallel.schedule={schedule}", "parallel.chunks=2", "run.dir=" + run_dir] + (
                [f"parallel.stage_split=[{split}]"] if schedule != "interleaved" else [])


def run_once(binary, schedule, m, a):
    run_dir = tempfile.mkdtemp(prefix=f"hpctrain_pipebench_{schedule}_{m}_")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # One rank per core, bound: the two stages never share a core with each other.
    cmd = ["mpiexec", "-n", str(a.stages), "--bind-to", a.bind, "--map-by", "core", binary, "train",
           os.path.join(ROOT, "configs", "fashion_mnist_mlp.json"), "data.path=" + a.data] + overrides_for(
               schedule, m, a, run_dir)
    load = wait_for_quiet(a.max_load, a.max_wait)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rep = json.load(open(os.path.join(run_dir, "report.json")))
    par = rep["parallel"]
    s0 = par["stage_of_rank"].index(0)
    return {"schedule": schedule, "microbatches": m, "load_1min_before": load, "load_1min_after": load1(),
            "bubble_measured": par["bubble_measured"], "bubble_theory": par["bubble_theory"],
            "bubble_common_window": par["bubble_common_window"], "entry_skew_share": par["entry_skew_share"],
            "window_idle_share": par["window_idle_share"], "window_steps": par["window_steps"],
            "idle_share": par["idle_share"], "forward_seconds": par["forward_seconds"],
            "backward_seconds": par["backward_seconds"], "wait_seconds": par["wait_seconds"],
            "pass_seconds": par["pass_seconds"], "stage_split": par["stage_split"],
            "wait_share": [w / t for w, t in zip(par["wait_seconds"], par["pass_seconds"])],
            "stage0_activation_peak_bytes": par["activation_peak_bytes"][s0],
            "stage0_in_flight_peak": par["in_flight_peak"][s0],
            "stage0_microbatch_activation_bytes": par["microbatch_activation_bytes"][s0],
            "activation_peak_bytes": par["activation_peak_bytes"], "peak_rss_bytes": par["peak_rss_bytes"],
            "samples_per_s": rep["training"]["samples_per_s"], "steps": rep["training"].get("steps"),
            "final_train_loss": rep["epochs"][-1].get("train_loss") if rep["epochs"] else None,
            "step_ms_per_rank": {k: v["per_rank"] for k, v in rep["time_per_step_ms"].items() if isinstance(v, dict)},
            "run_dir": run_dir, "command": " ".join(cmd)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--microbatches", default="2,4,8,16")
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--rows", type=int, default=64, help="samples per microbatch")
    p.add_argument("--width", type=int, default=512, help="hidden layer width")
    p.add_argument("--steps", type=int, default=48,
                   help="optimizer steps per run (a multiple of 16: the common windows settle every 16 steps)")
    p.add_argument("--stages", type=int, default=2, help="pipeline stages p (one rank each)")
    p.add_argument("--bind", default="core", help="mpiexec --bind-to (none where binding is not allowed)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--autogroup-nice", type=int,
                   help="set this session's scheduler autogroup to this nice value first (e.g. -10: the ranks are not "
                        "time-sliced evenly with other sessions' processes; needs root)")
    p.add_argument("--json", help="write the raw figures here")
    a = p.parse_args()
    if a.autogroup_nice is not None:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(a.autogroup_nice))
    autogroup = open("/proc/self/autogroup").read().strip() if os.path.exists("/proc/self/autogroup") else ""
    ms = [int(x) for x in a.microbatches.split(",")]
    schedules = a.schedules.split(",")
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}"
    command = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine}\ncommit: {commit}\ncommand: {command}\nautogroup: {autogroup}", flush=True)
    runs = []
    for rep in range(a.repeats):
        for schedule in schedules:
            for m in ms:
                r = run_once(a.binary, schedule, m, a)
                r["repeat"] = rep
                runs.append(r)
                print(f"repeat {rep} {schedule:11s} m={m:2d}: bubble {r['bubble_measured']:.3f}, common window "
                      f"{r['bubble_common_window']:.3f} (skew {r['entry_skew_share']:.3f}; theory "
                      f"{r['bubble_theory']:.3f}), stage 0 activations "
                      f"{r['stage0_activation_peak_bytes'] / 2**20:.2f} MiB in {r['stage0_in_flight_peak']} "
                      f"pairs, {r['samples_per_s']:.0f} samples/s, load {r['load_1min_before']:.2f}", flush=True)
    medians = []
    print(f"\n{'schedule':11s} {'m':>3s} {'theory':>7s} {'measured':>9s} {'diff pp':>8s} {'common':>7s} {'diff pp':>8s} "
          f"{'skew':>6s} {'wait':>6s} {'stage0 act MiB':>15s} "
          f"{'in flight':>9s} {'samples/s':>10s}")
    for schedule in schedules:
        for m in ms:
            rs = [r for r in runs if r["schedule"] == schedule and r["microbatches"] == m]
            med = {"schedule": schedule, "microbatches": m, "repeats": len(rs),
                   "bubble_theory": rs[0]["bubble_theory"],
                   "bubble_measured": statistics.median(r["bubble_measured"] for r in rs),
                   "bubble_measured_min": min(r["bubble_measured"] for r in rs),
                   "bubble_measured_max": max(r["bubble_measured"] for r in rs),
                   "bubble_common_window": statistics.median(r["bubble_common_window"] for r in rs),
                   "bubble_common_window_min": min(r["bubble_common_window"] for r in rs),
                   "bubble_common_window_max": max(r["bubble_common_window"] for r in rs),
                   "entry_skew_share": statistics.median(r["entry_skew_share"] for r in rs),
                   "wait_share": statistics.median(sum(r["wait_share"]) / len(r["wait_share"]) for r in rs),
                   "stage0_activation_peak_bytes": statistics.median(r["stage0_activation_peak_bytes"] for r in rs),
                   "stage0_in_flight_peak": rs[0]["stage0_in_flight_peak"],
                   "stage0_microbatch_activation_bytes":
                       statistics.median(r["stage0_microbatch_activation_bytes"] for r in rs),
                   "samples_per_s": statistics.median(r["samples_per_s"] for r in rs)}
            medians.append(med)
            print(f"{schedule:11s} {m:3d} {med['bubble_theory']:7.3f} {med['bubble_measured']:9.3f} "
                  f"{100 * (med['bubble_measured'] - med['bubble_theory']):+8.1f} {med['bubble_common_window']:7.3f} "
                  f"{100 * (med['bubble_common_window'] - med['bubble_theory']):+8.1f} {med['entry_skew_share']:6.3f} "
                  f"{med['wait_share']:6.3f} "
                  f"{med['stage0_activation_peak_bytes'] / 2**20:15.2f} {med['stage0_in_flight_peak']:9d} "
                  f"{med['samples_per_s']:10.0f}")
    loads = [r["load_1min_before"] for r in runs]
    print(f"\n1-minute load before the runs: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
          f"max {max(loads):.2f}")
    if a.json:
        out = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit,
               "machine": machine, "command": command, "autogroup": autogroup, "repeats": a.repeats, "rows_per_microbatch": a.rows,
               "width": a.width, "steps": a.steps, "stages": a.stages, "chunks_interleaved": 2,
               "load_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
               "medians": medians, "runs": runs}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
