#!/usr/bin/env python3
"""A model that does not fit one rank's memory trains when sharded or split (issues 19, 20).

Every rank runs in a memory cgroup of its own (cgroup v1, as Slurm's task/cgroup plugin
confines a job step) limited to --limit-mib of memory (swap included where the kernel accounts
it), so a rank that needs more is killed by the kernel. The same Transformer (AdamW, fp32)
is trained for a few steps on 2 ranks:

  none        plain data parallelism: every rank holds parameters, gradients, optimizer state
  optimizer   parallel.shard=optimizer (ZeRO-1)
  gradients   parallel.shard=gradients (ZeRO-2)
  parameters  parallel.shard=parameters (ZeRO-3)
  2 stages    parallel.pipeline_stages=2 (each rank holds half the blocks)

and `hpctrain plan --budget` is asked beforehand whether each fits. Recorded per case: exit
status, whether the kernel killed a rank for memory (the cgroup's failcnt / OOM count), each
rank's peak charged memory (memory.max_usage_in_bytes) and report.json's peak RSS, and the
peak RSS of the same run without the limit.

Needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory. Removes only the
cgroups it creates.

    .venv/bin/python bench/memory_limit_demo.py [--limit-mib 800] [--json bench/results/DATE-memory-limit.json]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, provenance

CGROOT = "/sys/fs/cgroup/memory"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
CASES = {"none": [], "optimizer": ["parallel.shard=optimizer"], "gradients": ["parallel.shard=gradients"],
         "parameters": ["parallel.shard=parameters"],
         "2 stages": ["parallel.pipeline_stages=2", "parallel.microbatches=2"]}

# Each rank moves itself into its cgroup, then becomes hpctrain.
WRAPPER = """#!/bin/sh
cg="$HPCTRAIN_DEMO_CGROUP/rank${OMPI_COMM_WORLD_RANK}"
echo $$ > "$cg/cgroup.procs" || exit 97
exec "$@"
"""


def model_args(a):
    return ["data.path=" + a.data, f"model.embed_dim={a.embed}", f"model.layers={a.layers}", "model.heads=8",
            "model.patch_size=7", f"train.batch_size={a.batch}", "data.verify_hashes=false",
            f"data.limit_train={a.batch * a.steps}", f"train.max_steps={a.steps}", "train.epochs=1",
            "run.progress=none", "run.threads=1", "checkpoint.at_end=false", "train.test_at_end=false",
            "data.val_fraction=0", "model.dropout=0", "model.checkpoint_every=0"]


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def oom_kills(cg):
    try:
        with open(os.path.join(cg, "memory.oom_control")) as f:
            m = re.search(r"oom_kill (\d+)", f.read())
        return int(m.group(1)) if m else None
    except OSError:
        return None


def remove_cgroup(cg):
    """Removes a cgroup of ours once its processes are gone (ranks may still be exiting)."""
    for _ in range(100):
        try:
            os.rmdir(cg)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    os.rmdir(cg)


def run_unconfined(a, extra):
    """The case without a limit: what each rank peaks at (report.json, resident set incl. libraries)."""
    run_dir = tempfile.mkdtemp(prefix="hpctrain_memdemo_")
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", a.binary, "train", a.config, *model_args(a), *extra,
           "run.dir=" + run_dir]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=a.timeout)
    out = {"rc": r.returncode, "command": " ".join(cmd)}
    if r.returncode == 0:
        rep = json.load(open(os.path.join(run_dir, "report.json")))
        out["peak_rss_mib"] = [x >> 20 for x in rep["memory"]["peak_rss_bytes"]["per_rank"]]
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def run_case(a, name, extra, base_cg, wrapper):
    ranks = []
    for r in range(2):
        cg = os.path.join(base_cg, f"rank{r}")
        os.mkdir(cg)
        write(os.path.join(cg, "memory.limit_in_bytes"), a.limit_mib << 20)
        if os.path.exists(os.path.join(cg, "memory.memsw.limit_in_bytes")):
            write(os.path.join(cg, "memory.memsw.limit_in_bytes"), a.limit_mib << 20)
        ranks.append(cg)
    run_dir = tempfile.mkdtemp(prefix="hpctrain_memdemo_")
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", "-x", "HPCTRAIN_DEMO_CGROUP", wrapper, a.binary, "train",
           a.config, *model_args(a), *extra, "run.dir=" + run_dir]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, HPCTRAIN_DEMO_CGROUP=base_cg), cwd=ROOT,
                       timeout=a.timeout)
    out = {"case": name, "overrides": extra, "rc": r.returncode, "seconds": round(time.time() - t0, 1),
           "command": " ".join(cmd), "ranks": []}
    for cg in ranks:
        out["ranks"].append({"max_usage_mib": (read_int(os.path.join(cg, "memory.max_usage_in_bytes")) or 0) >> 20,
                             "failcnt": read_int(os.path.join(cg, "memory.failcnt")), "oom_kills": oom_kills(cg)})
    report = os.path.join(run_dir, "report.json")
    if r.returncode == 0 and os.path.exists(report):
        rep = json.load(open(report))
        out["peak_rss_mib"] = [x >> 20 for x in rep["memory"]["peak_rss_bytes"]["per_rank"]]
        out["shard"] = rep["parallel"]["shard"]
    else:
        out["stderr_tail"] = (r.stderr or r.stdout)[-1500:]
    out["killed_for_memory"] = any((x["oom_kills"] or 0) > 0 for x in out["ranks"])
    for cg in ranks:
        remove_cgroup(cg)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def plan(a, name, extra):
    """hpctrain plan's verdict for the case at --budget: fits or EXCEEDS, and the MiB per rank it predicts
    (for 2 stages, the larger stage's)."""
    budget = a.limit_mib / 1024
    cmd = [a.binary, "plan", a.config, *model_args(a), *extra, "--ranks", "2", "--budget", f"{budget:.6f}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=a.timeout)
    out = {"command": " ".join(cmd), "rc": r.returncode, "output": r.stdout[-4000:]}
    if name == "2 stages":
        stages = re.findall(r"stage \d (fits|EXCEEDS) \(([0-9.]+) MiB\)", r.stdout)
        if stages:
            out["verdict"] = "fits" if all(v == "fits" for v, _ in stages) else "EXCEEDS"
            out["predicted_mib"] = max(float(m) for _, m in stages)
    else:
        m = re.search(r"^" + name + r"\s+[0-9.].*\n\s+(fits|EXCEEDS): ([0-9.]+) MiB", r.stdout, re.M)
        if m:
            out["verdict"], out["predicted_mib"] = m.group(1), float(m.group(2))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "hpctrain"))
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "transformer_100m.json"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    p.add_argument("--embed", type=int, default=512)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--limit-mib", type=int, default=800, help="memory limit of each rank's cgroup")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--json")
    a = p.parse_args()
    if os.geteuid() != 0 or not os.path.exists(os.path.join(CGROOT, "memory.limit_in_bytes")):
        sys.exit("memory_limit_demo: needs root and the cgroup v1 memory controller at " + CGROOT)
    info = provenance()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    base_cg = os.path.join(CGROOT, f"hpctrain_memdemo_{os.getpid()}")
    os.mkdir(base_cg)
    wrapper = os.path.join(tempfile.mkdtemp(prefix="hpctrain_memdemo_"), "in_cgroup.sh")
    write(wrapper, WRAPPER)
    os.chmod(wrapper, 0o755)
    results, plans = [], {}
    try:
        for name, extra in CASES.items():
            plans[name] = plan(a, name, extra)
            res = run_case(a, name, extra, base_cg, wrapper)
            res["unconfined"] = run_unconfined(a, extra)
            results.append(res)
            verdict = "trained" if res["rc"] == 0 else ("killed for memory" if res["killed_for_memory"]
                                                         else f"failed (rc {res['rc']})")
            print(f"{name:12s}: plan {plans[name].get('verdict')} ({plans[name].get('predicted_mib')} MiB); {verdict}; "
                  f"peak charged per rank {[x['max_usage_mib'] for x in res['ranks']]} MiB of {a.limit_mib}; "
                  f"report peak RSS {res.get('peak_rss_mib')}; without the limit "
                  f"{res['unconfined'].get('peak_rss_mib')}", flush=True)
    finally:
        for r in range(2):
            remove_cgroup(os.path.join(base_cg, f"rank{r}"))
        remove_cgroup(base_cg)
        shutil.rmtree(os.path.dirname(wrapper), ignore_errors=True)
    if a.json:
        out = dict(info, limit_mib_per_rank=a.limit_mib, embed_dim=a.embed, layers=a.layers, global_batch=a.batch,
                   steps=a.steps, ranks=2, results=results, plans=plans)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
