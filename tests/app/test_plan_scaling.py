"""hpctrain plan --nodes: the alpha-beta performance model. On constructed inputs: a one-rank
profile on one rank predicts its own step; alpha and beta fitted from a bench allreduce JSON
that follows the ring formula exactly come back; more nodes over a slow link expose more
communication and lower the efficiency, which a faster link restores; weak scaling keeps the
per-rank batch; the JSON output matches the table; with a profile per ranks-per-node count the
matching one sets the compute; alpha and beta are fitted at the run's bucket size from the
reducer's column, whatever the other sizes do; bad input names what is wrong."""
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
# A profile of 2 ranks on one node, each slower per sample (shared cores): 8 data, 16 forward,
# 30 backward at 32 rows per rank, optimizer 3.
prof2 = os.path.join(work, "report2.json")
json.dump(dict(profile, time_per_step_ms={k: {"mean": v} for k, v in (("data", 8.0), ("forward", 16.0),
                                                                     ("backward", 30.0), ("optimizer", 3.0))},
               world={"size": 2, "nodes": 1}), open(prof2, "w"))
both = [BIN, "plan", CONFIG, "data.path=" + FASHION, "--profile", prof + "," + prof2]
r1 = run(both + ["--nodes", "1", "--ranks-per-node", "1"], timeout=120)
r2 = run(both + ["--nodes", "1,2", "--ranks-per-node", "2", "--json", out], timeout=120)
t1, t2 = table(r1.out), table(r2.out)
pred = json.load(open(out)) if r2.rc == 0 else {}
c.check("two profiles: 1 rank per node computes from the 1-rank profile (36 ms)",
        r1.rc == 0 and abs(t1.get(1, [0] * 7)[1] - 36.0) < 1e-6, r1.text[-1500:])
c.check("two profiles: 2 ranks per node compute from the 2-rank profile (57 ms at 32 rows, 30 at 16)",
        r2.rc == 0 and abs(t2.get(1, [0] * 7)[1] - 57.0) < 0.01 and abs(t2.get(2, [0] * 7)[1] - 30.0) < 0.01
        and all(q["profile"] == prof2 for q in pred.get("predictions", [])), r2.text[-1500:])
# bench allreduce whose reducer column follows alpha 50 us, beta 1.25 GB/s near the run's
# buckets (25 MiB: 4 of them) and nothing like it far below (a token bucket's burst), and
# whose MPI_Allreduce column is twice as slow: the fit takes the reducer near 25 MiB.
ring = lambda s: 2 * (p - 1) * alpha + 2 * (p - 1) / p * s / beta  # noqa: E731
rows = [{"bytes": s, "buckets": 1, "hpctrain_us": 1e-3 * s / 1e6, "mpi_us": 1e-3 * s / 1e6} for s in (4096, 65536)]
rows += [{"bytes": s, "buckets": k, "hpctrain_us": k * ring(s / k) * 1e6, "mpi_us": 2 * ring(s) * 1e6}
         for s, k in ((1 << 22, 1), (1 << 24, 1), (1 << 26, 3), (1 << 28, 11))]
burst = os.path.join(work, "burst.json")
json.dump({"benchmark": "allreduce", "ranks": p, "nodes": 2, "rows": rows}, open(burst, "w"))
r = run(base + ["--nodes", "2", "--ranks-per-node", "2", "--inter", burst], timeout=120)
m = re.search(r"between nodes alpha ([0-9.]+) us, beta ([0-9.]+) GB/s", r.out)
c.check("the fit at the bucket size, from the reducer's column, recovers 50 us and 1.25 GB/s",
        r.rc == 0 and m and abs(float(m.group(1)) - 50) < 0.5 and abs(float(m.group(2)) - 1.25) < 0.01
        and "fitted on 3 sizes" in r.out, r.text[-1500:])
for args, rc, needle in ((["--nodes", "2"], 2, "--profile"),
                         (["--nodes", "2", "--profile", "/nonexistent.json"], 3, "/nonexistent.json"),
                         (["--nodes", "2", "--profile", prof, "--inter", prof], 3, "ranks")):
    r = run([BIN, "plan", CONFIG, "data.path=" + FASHION] + args, timeout=60)
    c.check(f"plan {' '.join(args)}: exit {rc} naming {needle}", r.rc == rc and needle in r.err, r.text[-600:])
c.finish()
