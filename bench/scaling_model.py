#!/usr/bin/env python3
"""Validates `hpctrain plan --nodes` (the alpha-beta performance model, docs/cluster.md)
against measured step times (issue 23 target: within 15% of every measured configuration):

  1. profile: 1 rank trains the benchmark MLP (--width, 3 hidden layers, batch --batch,
     --steps steps, one thread); its report.json is the model's input.
  2. one node, 2 ranks: `bench allreduce --json` on 2 ranks fits the intra-node link; the model
     predicts the 2-rank step; 2 ranks train and report theirs.
  3. two nodes of 1 rank each (tests/nodes/cluster.sh: network namespaces and a veth link, as
     root), the link limited by tc to each of --rates: `bench allreduce` across the nodes fits
     the link; the model predicts; 2 ranks across the nodes train.
Measured step = report.json time_per_step_ms.total_mean (median of --repeats runs).

    .venv/bin/python bench/scaling_model.py [--rates 1gbit,5gbit,10gbit] [--repeats 3] [--json FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import ROOT, provenance, wait_for_quiet

BIN = os.path.join(ROOT, "build", "hpctrain")
CLUSTER = os.path.join(ROOT, "tests", "nodes", "cluster.sh")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def train_args(a, run_dir):
    return ["train", os.path.join(ROOT, "configs", "fashion_mnist_mlp.json"), "data.path=" + a.data,
            f"model.hidden=[{a.width},{a.width},{a.width}]", "model.dropout=0", "model.batch_norm=false",
            "data.verify_hashes=false", "data.val_fraction=0", f"data.limit_train={a.batch * a.steps}",
            "train.epochs=1", "train.test_at_end=false", "train.early_stop_patience=0", f"train.batch_size={a.batch}",
            "checkpoint.at_end=false", "run.progress=none", "run.threads=1", "run.dir=" + run_dir]


def sh(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, **kw)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def step_ms(run_dir):
    return json.load(open(os.path.join(run_dir, "report.json")))["time_per_step_ms"]["total_mean"]


def predict(a, profile, nodes, per_node, link_flag, link_json):
    out = tempfile.mktemp(suffix=".json")
    sh([BIN, "plan", os.path.join(ROOT, "configs", "fashion_mnist_mlp.json"), "data.path=" + a.data,
        f"model.hidden=[{a.width},{a.width},{a.width}]", "--profile", profile, "--nodes", str(nodes),
        "--ranks-per-node", str(per_node), link_flag, link_json, "--json", out])
    return json.load(open(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--rates", default="1gbit,5gbit,10gbit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--json")
    a = p.parse_args()
    info = provenance()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    mpi2 = ["mpiexec", "-n", "2", "--bind-to", "core", "--map-by", "core"]
    rows = []

    def measure(label, launch, predicted):
        steps = []
        for _ in range(a.repeats):
            wait_for_quiet(a.max_load, 60)
            run_dir = tempfile.mkdtemp(prefix="hpctrain_scalemodel_")
            launch(run_dir)
            steps.append(step_ms(run_dir))
        m = statistics.median(steps)
        row = {"configuration": label, "predicted_step_ms": predicted["predictions"][0]["step_ms"],
               "predicted_exposed_ms": predicted["predictions"][0]["exposed_ms"], "measured_step_ms": m,
               "measured_runs_ms": steps, "error": predicted["predictions"][0]["step_ms"] / m - 1,
               "links": {"inter": predicted["inter"], "intra": predicted["intra"]}}
        rows.append(row)
        print(f"{label:28s} predicted {row['predicted_step_ms']:8.2f} ms, measured {m:8.2f} ms "
              f"({row['error'] * 100:+.1f}%)", flush=True)

    prof_dir = tempfile.mkdtemp(prefix="hpctrain_profile_")
    sh(["mpiexec", "-n", "1", BIN] + train_args(a, prof_dir))
    profile = os.path.join(prof_dir, "report.json")
    intra = tempfile.mktemp(suffix=".json")
    sh(mpi2 + [BIN, "bench", "allreduce", "--min-bytes", "65536", "--max-bytes", "16777216", "--json", intra])
    measure("1 node x 1 rank", lambda d: sh(["mpiexec", "-n", "1", BIN] + train_args(a, d)),
            predict(a, profile, 1, 1, "--intra", intra))
    measure("1 node x 2 ranks", lambda d: sh(mpi2 + [BIN] + train_args(a, d)),
            predict(a, profile, 1, 2, "--intra", intra))
    env_file = tempfile.mktemp(prefix="hpctrain_nodes_model_", suffix=".env")
    subprocess.run(["bash", CLUSTER, "up", env_file], check=True)
    try:
        env = dict(line.strip().split("=", 1) for line in open(env_file) if "=" in line)
        env = {k: v.strip("'") for k, v in env.items()}
        if "HPCTRAIN_NODES_SKIP" in env:
            sys.exit("cannot build the two nodes: " + env["HPCTRAIN_NODES_SKIP"])
        subnet = env["HPCTRAIN_NODES_SUBNET"]
        across = ["ip", "netns", "exec", env["HPCTRAIN_NODES_NS0"], "unshare", "--uts", "sh", "-c",
                  'hostname node0; exec "$@"', "sh", "mpirun", "--allow-run-as-root", "--hostfile",
                  env["HPCTRAIN_NODES_HOSTFILE"], "-np", "2", "--map-by", "node", "--mca", "plm_rsh_agent",
                  env["HPCTRAIN_NODES_AGENT"], "--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", subnet,
                  "--mca", "oob_tcp_if_include", subnet]
        for rate in a.rates.split(","):
            subprocess.run(["bash", CLUSTER, "rate", env_file, rate], check=True)
            inter = tempfile.mktemp(suffix=".json")
            sh(across + [BIN, "bench", "allreduce", "--min-bytes", "65536", "--max-bytes", "16777216", "--json",
                         inter])
            measure(f"2 nodes x 1 rank, {rate}", lambda d: sh(across + [BIN] + train_args(a, d)),
                    predict(a, profile, 2, 1, "--inter", inter))
    finally:
        subprocess.run(["bash", CLUSTER, "down", env_file])
    worst = max(abs(r["error"]) for r in rows)
    print(f"\nworst |error| {worst * 100:.1f}% (target 15%)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(info, width=a.width, batch=a.batch, steps=a.steps, repeats=a.repeats,
                           worst_abs_error=worst, rows=rows), f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
