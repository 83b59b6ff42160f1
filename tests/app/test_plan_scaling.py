"""hpctrain plan --nodes: the alpha-beta performance model. On constructed inputs: a one-rank
profile on one rank predicts its own step; alpha and beta fitted from a bench allreduce JSON
that follows the ring formula exactly come back; more nodes over a slow link expose more
communication and lower the efficiency, which a faster link restores; weak scaling keeps the
per-rank batch; the JSON output matches the table; bad input names what is wrong."""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, run  # noqa: E402

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
work = tempfile.mkdtemp(prefix="hpctrain_plan_scaling_")
# A 1-rank profile: 4 ms data, 10 forward, 20 backward, 2 optimizer, batch 64, 25M parameters.
profile = {"time_per_step_ms": {k: {"mean": v} for k, v in
                                (("data", 4.0), ("forward", 10.0), ("backward", 20.0), ("optimizer", 2.0))},
           "world": {"size": 1}, "training": {"global_batch": 64},
           "model": {"parameters": 25_000_000, "bucket_mb": 25.0}}
prof = os.path.join(work, "report.json")
json.dump(profile, open(prof, "w"))
# bench allreduce on 4 ranks with alpha 50 us and beta 1.25 GB/s (10 Gbit/s): t = 6 alpha + 1.5 S / beta.
alpha, beta, p = 50e-6, 1.25e9, 4
rows = [{"bytes": s, "mpi_us": (2 * (p - 1) * alpha + 2 * (p - 1) / p * s / beta) * 1e6} for s in (4096, 1 << 20, 1 << 24)]
inter = os.path.join(work, "inter.json")
json.dump({"benchmark": "allreduce", "ranks": p, "nodes": 2, "rows": rows}, open(inter, "w"))
base = [BIN, "plan", CONFIG, "data.path=" + FASHION, "--profile", prof]


def table(text):
    return {int(m.group(1)): [float(x) for x in m.groups()[1:]] for m in re.finditer(
        r"^\s*(\d+)\s+\d+\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$",
        text, re.M)}


out = os.path.join(work, "pred.json")
r = run(base + ["--nodes", "1", "--ranks-per-node", "1", "--json", out], timeout=120)
t = table(r.out)
c.check("one rank predicts the profile's own step (36 ms, efficiency 1)",
        r.rc == 0 and 1 in t and abs(t[1][4] - 36.0) < 1e-6 and abs(t[1][6] - 1.0) < 1e-9 and t[1][3] == 0,
        r.text[-1500:])
pred = json.load(open(out)) if os.path.exists(out) else {}
got = pred.get("predictions", [{}])[0].get("step_ms", -1.0)
c.check(f"the JSON holds the same prediction ({got} ms)", 1 in t and abs(got - t[1][4]) < 0.01, json.dumps(pred)[:500])

r = run(base + ["--nodes", "1,2,4,8", "--ranks-per-node", "2", "--inter", inter], timeout=120)
m = re.search(r"between nodes alpha ([0-9.]+) us, beta ([0-9.]+) GB/s", r.out)
c.check("alpha and beta fitted from the allreduce JSON come back (50 us, 1.25 GB/s)",
        r.rc == 0 and m and abs(float(m.group(1)) - 50) < 0.5 and abs(float(m.group(2)) - 1.25) < 0.01, r.text[-1500:])
slow = table(r.out)
c.check("over 10 Gbit/s more nodes expose more communication and lower the efficiency",
        len(slow) == 4 and slow[2][3] <= slow[4][3] <= slow[8][3] and slow[8][6] < slow[2][6] < 1.0, r.out)
r = run(base + ["--nodes", "8", "--ranks-per-node", "2", "--link-gbps", "400", "--link-latency-us", "2"], timeout=120)
fast = table(r.out)
c.check("a 400 Gbit/s link gives 8 nodes a higher efficiency than 10 Gbit/s",
        r.rc == 0 and 8 in fast and 8 in slow and fast[8][6] > slow[8][6], r.out)
r = run(base + ["--nodes", "1,4", "--ranks-per-node", "2", "--weak"], timeout=120)
weak = table(r.out)
c.check("weak scaling keeps the profile's per-rank batch (64) on every count",
        r.rc == 0 and weak.get(4, [0])[0] == 64.0 and weak.get(1, [0])[0] == 64.0, r.out)
r = run(base + ["--nodes", "2", "--ranks-per-node", "2", "comm.hierarchical=on"], timeout=120)
c.check("comm.hierarchical=on models the hierarchical reduction", r.rc == 0 and "reduction hierarchical" in r.out,
        r.text[-800:])
for args, rc, needle in ((["--nodes", "2"], 2, "--profile"),
                         (["--nodes", "2", "--profile", "/nonexistent.json"], 3, "/nonexistent.json"),
                         (["--nodes", "2", "--profile", prof, "--inter", prof], 3, "ranks")):
    r = run([BIN, "plan", CONFIG, "data.path=" + FASHION] + args, timeout=60)
    c.check(f"plan {' '.join(args)}: exit {rc} naming {needle}", r.rc == rc and needle in r.err, r.text[-600:])
c.finish()
