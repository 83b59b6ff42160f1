"""Two nodes on one machine (tests/nodes/cluster.sh): Open MPI launches 2 ranks on each of
two network namespaces with their own hostnames, shared memory inside a node and TCP over
the veth link between them. Checks that hpctrain sees 2 nodes (report.json's node and local
rank of every rank), that data-parallel training on 2 nodes x 2 ranks gives the same
losses as 4 ranks on one node (bitwise with the flat allreduce, within rounding with the
hierarchical one that comm.hierarchical=auto picks here), that a pipeline whose stages span the nodes starts and gives
the same losses as on one node, that the gradients really cross the link (the veth's byte
counters), and that training still runs with the link limited to 50 Mbit/s by tc."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, Result, mpirun  # noqa: E402

env = {}
with open(os.environ["HPCTRAIN_NODES_ENV"]) as f:
    for line in f:
        key, _, value = line.strip().partition("=")
        env[key] = value.strip("'")
if "HPCTRAIN_NODES_SKIP" in env:
    print("skipped: " + env["HPCTRAIN_NODES_SKIP"])
    sys.exit(77)

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_nodes_")
BIN_ABS = os.path.abspath(os.path.join(SOURCE, BIN))
CLUSTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster.sh")


def nodes_mpirun(args, timeout=300):
    """mpirun from node0 over both nodes, 2 ranks each (ranks 0-1 on node0, 2-3 on node1)."""
    cmd = [env["HPCTRAIN_NODES_MPIRUN"], "-np", "4"] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=SOURCE)
    return Result(p.returncode, p.stdout, p.stderr, 0)


def link_bytes():
    out = subprocess.run(["ip", "-n", env["HPCTRAIN_NODES_NS0"], "-s", "-j", "link", "show",
                          env["HPCTRAIN_NODES_VETH0"]], capture_output=True, text=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["tx"]["bytes"] + stats["rx"]["bytes"]


r = nodes_mpirun(["hostname"], timeout=60)
names = sorted(r.out.split())
c.check(f"mpirun starts 2 ranks on each node ({names})", r.rc == 0 and names == ["node0", "node0", "node1", "node1"],
        r.text[-2000:])

common = ["train", os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json"), "data.path=" + os.path.abspath(FASHION),
          "data.verify_hashes=false", "data.limit_train=2560", "run.progress=none", "model.dropout=0",
          "model.batch_norm=false", "model.hidden=[64,48,32]", "train.epochs=1", "train.batch_size=64",
          "run.log_every=5", "checkpoint.at_end=false", "run.threads=1"]


def losses(run_dir):
    lines = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [x["loss"] for x in lines if x.get("type") == "step"]


def compare(name, extra, tolerance=0.0):
    one = os.path.join(work, name + "_one_node")
    two = os.path.join(work, name + "_two_nodes")
    r1 = mpirun(4, common + extra + ["run.dir=" + one], timeout=300)
    before = link_bytes()
    r2 = nodes_mpirun([BIN_ABS] + common + extra + ["run.dir=" + two])
    crossed = link_bytes() - before
    ok = r1.rc == 0 and r2.rc == 0
    a, b = (losses(one), losses(two)) if ok else ([], [])
    worst = max((abs(x - y) / abs(x) for x, y in zip(a, b)), default=1.0)
    c.check(f"{name}: 2 nodes x 2 ranks give one node's losses at every logged step (worst {worst:.1e} relative, "
            f"allowed {tolerance:.0e})", ok and len(a) == len(b) > 0 and worst <= tolerance, (r1.text + r2.text)[-3000:])
    return two, crossed


# The flat allreduce sums in the same order on one node and on two: bitwise equal losses.
two, crossed = compare("data parallel, flat allreduce", ["comm.hierarchical=off"])
world = json.load(open(os.path.join(two, "report.json")))["world"]
c.check(f"report.json: 2 nodes, rank 0 on node0, node and local rank of every rank ({world.get('node_of_rank')}, "
        f"{world.get('local_rank_of_rank')})",
        world["nodes"] == 2 and world["hostname_rank0"] == "node0" and world["node_of_rank"] == [0, 0, 1, 1]
        and world["local_rank_of_rank"] == [0, 1, 0, 1], json.dumps(world)[:1500])
report = json.load(open(os.path.join(two, "report.json")))
params, steps = report["model"]["parameters"], report["training"]["steps"]
# Every step reduces every gradient across the link at least once (4 bytes a value).
c.check(f"the gradients crossed the link: {crossed / 1e6:.1f} MB over the veth pair (at least {steps} steps x "
        f"{params} parameters x 4 bytes)", steps > 0 and crossed >= steps * params * 4, "")

# comm.hierarchical=auto turns the node-aware reduction on across 2 nodes with 2 ranks each:
# another summation order, so equal within rounding.
two, _ = compare("data parallel, hierarchical reduction (auto)", ["comm.hierarchical=auto"], 1e-5)
comm = json.load(open(os.path.join(two, "report.json")))["communication"]
c.check(f"report.json names the hierarchical reduction's topology ({comm.get('hierarchical')})",
        comm.get("hierarchical") == "2 nodes, 2 ranks on the largest", json.dumps(comm))

two, _ = compare("pipeline across nodes", ["parallel.pipeline_stages=2", "parallel.microbatches=4",
                                           "parallel.stage_split=[1]"])
par = json.load(open(os.path.join(two, "report.json")))["parallel"]
c.check(f"the stages span the nodes: stage of each rank {par.get('stage_of_rank')}",
        par.get("stage_of_rank") == [0, 0, 1, 1], json.dumps(par)[:800])

# Two sizes, one repeat: each operation takes milliseconds over TCP between oversubscribed ranks.
r = nodes_mpirun([BIN_ABS, "bench", "allreduce", "--min-bytes", "262144", "--max-bytes", "1048576", "--repeats", "1"])
c.check("bench allreduce across the nodes: flat, bucketed and hierarchical sums all check",
        r.rc == 0 and "2 nodes" in r.out and "FAIL" not in r.out and r.out.count(" ok") == 2, r.text[-2000:])

subprocess.run(["bash", CLUSTER, "rate", os.environ["HPCTRAIN_NODES_ENV"], "50mbit"], check=True)
try:
    run_dir = os.path.join(work, "limited")
    r = nodes_mpirun([BIN_ABS] + common + ["run.dir=" + run_dir, "train.max_steps=10"])
    c.check("training runs with the link limited to 50 Mbit/s (tc token bucket)",
            r.rc == 0 and os.path.exists(os.path.join(run_dir, "report.json")), r.text[-2000:])
finally:
    subprocess.run(["bash", CLUSTER, "rate", os.environ["HPCTRAIN_NODES_ENV"], "off"], check=True)
c.finish()
