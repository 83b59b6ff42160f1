"""The overlapped gradient reduction's sum, before and after it became a RingSum
(comm/RingSum.hpp), in the same run: `hpctrain bench allreduce` from two binaries, in
alternating order, on 2 ranks of this machine and on the two-node test cluster
(tests/nodes/cluster.sh, as root) with the link limited to each of --rates, 1 and 2 ranks per
node. The `hpctrain_us` column is the flat reducer as a training step drives it (started by
backward's hooks on the communication thread, then waited for); `hierarchical_us` the same
with comm.hierarchical=on; `mpi_us` a blocking MPI_Allreduce of the same bytes.

Prediction: Open MPI's MPI_Iallreduce reduces to one rank and broadcasts back when the
buffer is in place or there are fewer than 4 ranks, so each value crosses twice, one
direction at a time; a ring sends and receives at once and moves half as much per rank:
about 2x on a link-bound sum, and the hierarchical path (its leaders' sum also a ring) under
the flat ring across nodes, whose ring crosses the link twice per direction.

    .venv/bin/python bench/overlap_ring.py --baseline /tmp/hpctrain_before [--bin build/hpctrain]
        [--rates 1gbit] [--rounds 2] [--repeats 3] [--json FILE]
"""
import argparse
import json
import os
import subprocess
import tempfile

from _common import ROOT, link_rate, provenance, save_json, two_nodes, wait_for_quiet

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def bench(launch, binary, a):
    out = tempfile.mktemp(suffix=".json")
    p = subprocess.run(launch + [binary, "bench", "allreduce", "--min-bytes", a.min_bytes, "--max-bytes",
                                 a.max_bytes, "--repeats", str(a.repeats), "--json", out],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(launch)} {binary}: exit {p.returncode}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    rows = json.load(open(out))["rows"]
    os.unlink(out)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True,
                    help="hpctrain before the change, built with this tree's bench (bench allreduce of an "
                         "older tree times other paths)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "hpctrain"))
    ap.add_argument("--rates", default="1gbit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-bytes", default="16384")
    ap.add_argument("--max-bytes", default="16777216")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--json")
    a = ap.parse_args()
    binaries = {"baseline": os.path.abspath(a.baseline), "after": os.path.abspath(a.bin)}
    layouts = [("1 node x 2 ranks", None, ["mpiexec", "-n", "2", "--bind-to", "core"])]
    results = []
    with two_nodes("hpctrain_nodes_ring_") as env:
        for rate in a.rates.split(","):
            layouts.append((f"2 nodes x 1 rank, {rate}", rate, [env["HPCTRAIN_NODES_MPIRUN"], "-np", "2",
                                                                 "--map-by", "node"]))
            layouts.append((f"2 nodes x 2 ranks, {rate}", rate, [env["HPCTRAIN_NODES_MPIRUN"], "-np", "4"]))
        for name, rate, launch in layouts:
            if rate is not None:
                link_rate(env, rate)
            runs = {k: [] for k in binaries}
            for r in range(a.rounds):
                order = list(binaries) if r % 2 == 0 else list(reversed(binaries))
                for k in order:
                    wait_for_quiet(a.max_load, 30)
                    runs[k].append(bench(launch, binaries[k], a))
            rows = []
            for i, row in enumerate(runs["after"][0]):
                med = {}
                for k in binaries:
                    for col in ("mpi_us", "hpctrain_us", "hierarchical_us"):
                        vals = sorted(run[i][col] for run in runs[k])
                        med[f"{k}_{col}"] = vals[len(vals) // 2]
                med["bytes"] = row["bytes"]
                med["flat_speedup"] = med["baseline_hpctrain_us"] / med["after_hpctrain_us"]
                med["hierarchical_speedup"] = med["baseline_hierarchical_us"] / med["after_hierarchical_us"]
                med["after_hierarchical_over_flat"] = med["after_hpctrain_us"] / med["after_hierarchical_us"]
                med["after_hierarchical_over_mpi"] = med["after_mpi_us"] / med["after_hierarchical_us"]
                rows.append(med)
                print(f"{name:24s} {row['bytes']:>9d} B: flat {med['baseline_hpctrain_us']:9.0f} -> "
                      f"{med['after_hpctrain_us']:9.0f} us ({med['flat_speedup']:.2f}x); hier "
                      f"{med['baseline_hierarchical_us']:9.0f} -> {med['after_hierarchical_us']:9.0f} us; "
                      f"hier/flat {med['after_hierarchical_over_flat']:.2f}, hier/MPI_Allreduce "
                      f"{med['after_hierarchical_over_mpi']:.2f}", flush=True)
            results.append({"layout": name, "rows": rows, "raw": runs})
    out = dict(provenance(), binaries=binaries, rounds=a.rounds, repeats=a.repeats, layouts=results,
               note="medians over rounds of each binary's per-size medians; baseline = MPI_Iallreduce in the "
                    "overlapped path, after = RingSum")
    save_json(a.json, out)


if __name__ == "__main__":
    main()
