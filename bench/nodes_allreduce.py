"""Flat against hierarchical gradient reduction across two nodes on one machine
(tests/nodes/cluster.sh: network namespaces, a veth link, 2 ranks per node), with the link
unlimited and limited by a tc token bucket.

For each link rate it runs `hpctrain bench allreduce` over the 4 ranks (mpirun from node0,
Open MPI's rsh launcher entering the nodes): per message size the plain MPI_Allreduce, the
bucketed reducer (flat) and the hierarchical sum (reduce in the node, allreduce among the
node leaders, broadcast in the node), medians of --repeats, all in the same run.

Prediction: between the nodes a flat ring allreduce over 4 ranks (2 per node) moves
2 x 2(P-1)/P = 3 message sizes over the link, the hierarchical sum 2 (one allreduce between
the two leaders, each way); when the link is the bottleneck the hierarchical sum should
approach 1.5x the flat one's bandwidth, and on an unlimited veth (memory speed) it should
lose to the flat one, which keeps every rank busy.

Usage (root): .venv/bin/python bench/nodes_allreduce.py [--rates off,1gbit,200mbit] [--repeats 5]
Writes bench/results/<date>-nodes-allreduce.json (-2, -3, ... beside the day's earlier runs)."""
import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile

from _common import ROOT, link_rate, two_nodes, write_results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="off,1gbit,200mbit")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-bytes", default="65536")
    ap.add_argument("--max-bytes", default="16777216")
    a = ap.parse_args()
    runs = []
    with two_nodes("hpctrain_nodes_bench_") as env:
        for rate in a.rates.split(","):
            link_rate(env, rate)
            out_json = tempfile.mktemp(suffix=".json")
            cmd = [env["HPCTRAIN_NODES_MPIRUN"], "-np", "4", os.path.join(ROOT, "build", "hpctrain"), "bench",
                   "allreduce", "--min-bytes", a.min_bytes, "--max-bytes", a.max_bytes, "--repeats", str(a.repeats),
                   "--json", out_json]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            print(f"link {rate}:\n{p.stdout}{p.stderr[-2000:]}", flush=True)
            p.check_returncode()
            runs.append({"link_rate": rate, "result": json.load(open(out_json))})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    result = {"benchmark": "nodes_allreduce", "date": datetime.date.today().isoformat(), "commit": commit,
              "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
              "command": "bench/nodes_allreduce.py --rates %s --repeats %d --min-bytes %s --max-bytes %s"
                         % (a.rates, a.repeats, a.min_bytes, a.max_bytes),
              "topology": "2 nodes (network namespaces) x 2 ranks, veth link, Open MPI vader inside a node, tcp "
                          "between", "runs": runs}
    print("wrote", write_results("nodes-allreduce", result))  # beside the day's earlier runs

if __name__ == "__main__":
    main()
