#!/usr/bin/env python3
"""Validates `hpctrain plan --nodes` (the alpha-beta performance model, docs/cluster.md)
against measured step times (issue 23 target: within 15% of every measured configuration).

Measurement (written to --raw DIR, so that the model can be re-run on the same figures with
--from DIR):
  1. profiles: the benchmark MLP (--width, 3 hidden layers, global batch --batch, --steps
     steps, one thread per rank) trained --repeats times on 1 rank and on 2 ranks of this
     machine; the report.json of median step time of each is the model's compute input (one
     per ranks-per-node count).
  2. `bench allreduce --json` on 2 ranks of one node, at the run's gradient bucket size S and
     S/16, S/4, 4S (the model fits alpha and beta on the sizes within 4x of S), each operation
     after the 2-rank profile's compute per step (--gap-ms), --bench-runs times (the per-size
     median is the model's input: one run's shared-memory figure moved 2x between runs).
  3. validation runs, --repeats each (separate runs from the profiles, interleaved with them):
     1 rank; 2 ranks on one
     node; 2 nodes of 1 rank each (tests/nodes/cluster.sh: network namespaces and a veth link,
     as root) with the link limited by tc to each of --rates, each after its own bench
     allreduce across the nodes.
Prediction: `plan --profile` with both profiles (the one of the same ranks per node is used);
the two namespace "nodes" share this machine's 2 cores, so their compute is the 2-rank
profile's. Ablations in the same file: the 1-rank profile alone (the model before), and the
plain MPI_Allreduce column instead of the trainer's reducer column.
Measured step = report.json time_per_step_ms.total_mean, median of --repeats runs.

    .venv/bin/python bench/scaling_model.py [--bin B] [--rates 1gbit,5gbit,10gbit] [--repeats 3]
        [--raw DIR | --from DIR] [--json FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from _common import ROOT, provenance, wait_for_quiet

CLUSTER = os.path.join(ROOT, "tests", "nodes", "cluster.sh")
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_mlp.json")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPI2 = ["mpiexec", "-n", "2", "--bind-to", "core", "--map-by", "core"]


def model_args(a):
    return ["data.path=" + a.data, f"model.hidden=[{a.width},{a.width},{a.width}]", "model.dropout=0",
            "model.batch_norm=false"]


def train_args(a, run_dir):
    return ["train", CONFIG] + model_args(a) + [
        "data.verify_hashes=false", "data.val_fraction=0", f"data.limit_train={a.batch * a.steps}", "train.epochs=1",
        "train.test_at_end=false", "train.early_stop_patience=0", f"train.batch_size={a.batch}",
        "checkpoint.at_end=false", "run.progress=none", "run.threads=1", "run.dir=" + run_dir]


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def train(a, launch, raw, name):
    """One training under LAUNCH; its report.json kept as RAW/NAME.json with the load before it."""
    load = wait_for_quiet(a.max_load, a.max_wait)
    run_dir = tempfile.mkdtemp(prefix="hpctrain_scalemodel_")
    sh(launch + [a.bin] + train_args(a, run_dir))
    report = json.load(open(os.path.join(run_dir, "report.json")))
    report["bench_load_before"] = load
    json.dump(report, open(os.path.join(raw, name + ".json"), "w"))
    shutil.rmtree(run_dir, ignore_errors=True)
    return report


def bench(a, launch, raw, name, bucket_bytes, gap_ms):
    """bench allreduce at S/16, S/4, S, 4S (S = the run's bucket, rounded to whole floats), each
    operation after GAP_MS of busy wait (the profile's compute per step: the link is timed as
    training uses it, credit refilled between reductions); --bench-runs separate runs, minutes
    apart on a shared machine, kept as NAME-K.json, and NAME.json their per-size median."""
    s = int(bucket_bytes) // 64 * 4
    runs = []
    for k in range(a.bench_runs):
        wait_for_quiet(a.max_load, a.max_wait)
        path = os.path.join(raw, f"{name}-{k}.json")
        sh(launch + [a.bin, "bench", "allreduce", "--min-bytes", str(s), "--max-bytes", str(s * 64), "--repeats",
                     str(a.bench_repeats), "--gap-ms", f"{gap_ms:.3f}", "--json", path])
        runs.append(json.load(open(path)))
    merged = dict(runs[0], runs=a.bench_runs)
    for i, row in enumerate(merged["rows"]):
        for col in ("mpi_us", "hpctrain_us", "hierarchical_us"):
            if col in row:
                row[col] = statistics.median(run["rows"][i][col] for run in runs)
    json.dump(merged, open(os.path.join(raw, name + ".json"), "w"))


def cluster_launch(env):
    return [env["HPCTRAIN_NODES_MPIRUN"], "-np", "2", "--map-by", "node"]


def measure(a, raw):
    """Every measurement into RAW; returns the list of (label, kind, rate) configurations."""
    runs1 = ["mpiexec", "-n", "1"]
    # Profiles and validation runs interleaved, so that a noisy minute hits both alike; the
    # profile of median step time is the model's input.
    for i in range(a.repeats):
        train(a, runs1, raw, f"profile-1r-{i}")
        train(a, MPI2, raw, f"profile-2r-{i}")
        train(a, runs1, raw, f"run-1x1-{i}")
        train(a, MPI2, raw, f"run-1x2-{i}")
    for name in ("profile-1r", "profile-2r"):
        reports = [json.load(open(os.path.join(raw, f"{name}-{i}.json"))) for i in range(a.repeats)]
        reports.sort(key=lambda r: r["time_per_step_ms"]["total_mean"])
        json.dump(reports[len(reports) // 2], open(os.path.join(raw, name + ".json"), "w"))
    profile = json.load(open(os.path.join(raw, "profile-2r.json")))  # one rank alone reduces nothing: 0 buckets
    bucket = profile["model"]["parameters"] * 4.0 / max(1, profile["model"]["gradient_buckets"])
    gap = 0.0 if a.no_gap else sum(profile["time_per_step_ms"][k]["mean"]
                                   for k in ("data", "forward", "backward", "optimizer"))
    bench(a, MPI2, raw, "intra", bucket, gap)
    env_file = tempfile.mktemp(prefix="hpctrain_nodes_model_", suffix=".env")
    subprocess.run(["bash", CLUSTER, "up", env_file], check=True)
    try:
        env = dict(line.strip().split("=", 1) for line in open(env_file) if "=" in line)
        env = {k: v.strip("'") for k, v in env.items()}
        if "HPCTRAIN_NODES_SKIP" in env:
            sys.exit("cannot build the two nodes: " + env["HPCTRAIN_NODES_SKIP"])
        for rate in a.rates.split(","):
            subprocess.run(["bash", CLUSTER, "rate", env_file, rate], check=True)
            bench(a, cluster_launch(env), raw, f"inter-{rate}", bucket, gap)
            for i in range(a.repeats):
                train(a, cluster_launch(env), raw, f"run-2x1-{rate}-{i}")
    finally:
        subprocess.run(["bash", CLUSTER, "down", env_file])


def plan(a, raw, profiles, nodes, per_node, link_flag, link_json):
    out = tempfile.mktemp(suffix=".json")
    sh([a.plan_bin, "plan", CONFIG] + model_args(a) + [
        "--profile", ",".join(os.path.join(raw, p + ".json") for p in profiles), "--nodes", str(nodes),
        "--ranks-per-node", str(per_node), link_flag, link_json, "--json", out])
    result = json.load(open(out))
    os.remove(out)
    return result


def mpi_column_only(raw, name):
    """A copy of a bench file without the reducer column: the model then fits MPI_Allreduce."""
    b = json.load(open(os.path.join(raw, name + ".json")))
    for row in b["rows"]:
        row.pop("hpctrain_us", None)
    path = os.path.join(raw, name + "-mpi-column.json")
    json.dump(b, open(path, "w"))
    return path


def configurations(a, raw):
    """(label, run prefix, plan arguments) per validated configuration."""
    both = ["profile-1r", "profile-2r"]
    out = [("1 node x 1 rank", "run-1x1", (both, 1, 1, "--intra", "intra")),
           ("1 node x 2 ranks", "run-1x2", (both, 1, 2, "--intra", "intra"))]
    for rate in a.rates.split(","):
        if os.path.exists(os.path.join(raw, f"inter-{rate}.json")):
            out.append((f"2 nodes x 1 rank, {rate}", f"run-2x1-{rate}", (["profile-2r"], 2, 1, "--inter",
                                                                          f"inter-{rate}")))
    return out


def phases(reports):
    """Median over REPORTS of each phase's per-step mean (ms)."""
    names = ("data", "forward", "backward", "comm_exposed", "optimizer")
    return {n: statistics.median(r["time_per_step_ms"][n]["mean"] for r in reports) for n in names}


def evaluate(a, raw):
    rows = []
    for label, prefix, (profiles, nodes, per_node, flag, link) in configurations(a, raw):
        reports = [json.load(open(os.path.join(raw, f))) for f in sorted(os.listdir(raw)) if f.startswith(prefix + "-")
                   and f[len(prefix) + 1:-5].isdigit()]
        steps = [r["time_per_step_ms"]["total_mean"] for r in reports]
        exposed = [r["time_per_step_ms"]["comm_exposed"]["mean"] for r in reports]
        m = statistics.median(steps)
        pred = plan(a, raw, profiles, nodes, per_node, flag, os.path.join(raw, link + ".json"))
        first = pred["predictions"][0]
        only_1r = plan(a, raw, ["profile-1r"], nodes, per_node, flag, os.path.join(raw, link + ".json"))
        mpi_col = plan(a, raw, profiles, nodes, per_node, flag, mpi_column_only(raw, link))
        row = {"configuration": label, "profile": first["profile"].replace(raw + "/", ""),
               "predicted_step_ms": first["step_ms"], "predicted_compute_ms": first["compute_ms"],
               "predicted_exposed_ms": first["exposed_ms"], "measured_step_ms": m, "measured_runs_ms": steps,
               "measured_exposed_ms": statistics.median(exposed), "error": first["step_ms"] / m - 1,
               "links": {"inter": pred["inter"], "intra": pred["intra"]},
               "load_before_runs": [r.get("bench_load_before") for r in reports],
               "measured_phases_ms": phases(reports),
               "profile_phases_ms": {p: phases([json.load(open(os.path.join(raw, p + ".json")))]) for p in profiles},
               "bench_rows": [{k: b[k] for k in ("bytes", "buckets", "mpi_us", "hpctrain_us")}
                              for b in json.load(open(os.path.join(raw, link + ".json")))["rows"]],
               "ablation_1rank_profile_error": only_1r["predictions"][0]["step_ms"] / m - 1,
               "ablation_mpi_allreduce_column_error": mpi_col["predictions"][0]["step_ms"] / m - 1}
        rows.append(row)
        print(f"{label:28s} predicted {row['predicted_step_ms']:8.2f} ms (exposed {row['predicted_exposed_ms']:.2f}), "
              f"measured {m:8.2f} ms (exposed {row['measured_exposed_ms']:.2f}): {row['error'] * 100:+.1f}%; "
              f"1-rank profile only {row['ablation_1rank_profile_error'] * 100:+.1f}%, MPI_Allreduce column "
              f"{row['ablation_mpi_allreduce_column_error'] * 100:+.1f}%", flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "hpctrain"), help="hpctrain that trains and benches")
    p.add_argument("--plan-bin", default=os.path.join(ROOT, "build", "hpctrain"), help="hpctrain that predicts")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--rates", default="1gbit,5gbit,10gbit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bench-repeats", type=int, default=5)
    p.add_argument("--bench-runs", type=lambda v: max(1, int(v)), default=3,
                   help="bench allreduce runs per link (median per size)")
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=60)
    p.add_argument("--raw", help="keep the measurements here (default: a temporary folder)")
    p.add_argument("--from", dest="source", help="predict from the measurements of an earlier --raw DIR")
    p.add_argument("--measure-only", action="store_true", help="stop after the measurements (predict later: --from)")
    p.add_argument("--no-gap", action="store_true", help="bench allreduce back to back (no --gap-ms)")
    p.add_argument("--json")
    a = p.parse_args()
    info = provenance()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    raw = os.path.abspath(a.source or a.raw or tempfile.mkdtemp(prefix="hpctrain_scalemodel_raw_"))
    if not a.source:
        os.makedirs(raw, exist_ok=True)
        measure(a, raw)
        json.dump(dict(info, measured_with=a.bin, repeats=a.repeats, max_load=a.max_load),
                  open(os.path.join(raw, "provenance.json"), "w"), indent=1)
    if a.measure_only:
        return print(f"measurements in {raw}")
    rows = evaluate(a, raw)
    worst = max(abs(r["error"]) for r in rows)
    print(f"\nworst |error| {worst * 100:.1f}% (target 15%); measurements in {raw}")
    if a.json:
        with open(a.json, "w") as f:
            measured = os.path.join(raw, "provenance.json")
            json.dump(dict(info, width=a.width, batch=a.batch, steps=a.steps, raw=raw,
                           measurement=json.load(open(measured)) if os.path.exists(measured) else None,
                           worst_abs_error=worst, rows=rows), f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
