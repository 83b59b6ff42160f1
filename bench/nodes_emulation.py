"""What the two-node test cluster's emulation settings do (tests/nodes/cluster.sh,
docs/cluster.md "Tested across two nodes"), each measured against the cluster as it is, in
the same run: `hpctrain bench allreduce` between the 2 nodes, 1 rank each (--rate), with the
link's settings one at a time undone on the mpirun command line: ranks polling instead of
yielding when idle (mpi_yield_when_idle 0), one TCP connection per pair (btl_tcp_links 1),
both ranks left on the cores Open MPI binds them to (no pin.sh), and no pin.sh with polling
together.
Also records each rank's CPU affinity with and without pin.sh.

    .venv/bin/python bench/nodes_emulation.py [--rate 5gbit] [--repeats 3] [--json FILE]
"""
import argparse
import json
import os
import subprocess
import tempfile

from _common import ROOT, link_rate, provenance, save_json, two_nodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "hpctrain"))
    ap.add_argument("--rate", default="5gbit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-bytes", default="65536")
    ap.add_argument("--max-bytes", default="4194304")
    ap.add_argument("--json")
    a = ap.parse_args()
    out = dict(provenance(), rate=a.rate, variants=[])
    with two_nodes("hpctrain_nodes_emul_") as env:
        link_rate(env, a.rate)
        mpirun = env["HPCTRAIN_NODES_MPIRUN"]
        pin = os.path.join(env["HPCTRAIN_NODES_DIR"], "pin.sh") + " "

        def variant(name, *changes):
            """The cluster's mpirun with some of its settings changed, (old, new) text pairs
            (MCA parameters may be given only once, so the script itself is rewritten)."""
            path = os.path.join(env["HPCTRAIN_NODES_DIR"], f"mpirun-{name}.sh")
            with open(mpirun) as f:
                text = f.read()
            for old, new in changes:
                if old not in text:
                    raise SystemExit(f"{mpirun} has no '{old}'")
                text = text.replace(old, new)
            with open(path, "w") as g:
                g.write(text)
            os.chmod(path, 0o755)
            return path

        poll = ("--mca mpi_yield_when_idle 1", "--mca mpi_yield_when_idle 0")
        unpinned = variant("unpinned", (pin, ""))
        affinity = "echo $(hostname) $(grep Cpus_allowed_list /proc/self/status)"
        for name, launch in (("pinned", mpirun), ("unpinned", unpinned)):
            p = subprocess.run([launch, "-np", "2", "--map-by", "node", "sh", "-c", affinity], capture_output=True,
                               text=True, check=True)
            out[f"affinity_{name}"] = sorted(x for x in p.stdout.split("\n") if x)
        variants = [("as the cluster is", mpirun, []),
                    ("ranks poll (mpi_yield_when_idle 0)", variant("poll", poll), []),
                    ("one TCP connection (btl_tcp_links 1)",
                     variant("links1", ("--mca btl_tcp_links 4", "--mca btl_tcp_links 1")), []),
                    ("Open MPI's binding (no pin.sh)", unpinned, []),
                    ("Open MPI's binding and ranks poll", variant("before", (pin, ""), poll), [])]
        for name, launch, extra in variants:
            js = tempfile.mktemp(suffix=".json")
            p = subprocess.run([launch, "-np", "2", "--map-by", "node"] + extra +
                               [a.bin, "bench", "allreduce", "--min-bytes", a.min_bytes, "--max-bytes", a.max_bytes,
                                "--repeats", str(a.repeats), "--json", js], capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"{name}: exit {p.returncode}\n{p.stdout[-1500:]}{p.stderr[-1500:]}")
            rows = json.load(open(js))["rows"]
            os.unlink(js)
            out["variants"].append({"variant": name, "mca": extra, "rows": rows})
            print(name + ": " + ", ".join(f"{r['bytes']} B {r['mpi_us']:.0f}/{r['hpctrain_us']:.0f} us" for r in rows),
                  flush=True)
    print("affinity:", out.get("affinity_pinned"), "without pin.sh:", out.get("affinity_unpinned"))
    save_json(a.json, out)


if __name__ == "__main__":
    main()
