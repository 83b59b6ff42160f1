"""run.monitor_seconds on 2 real ranks: `system` lines in metrics.jsonl carry every rank's
samples, report.json summarizes them with the monitor's cost, and 0 turns it off. Also the
report's recommendations and the figures they read (docs/outputs.md)."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun, read_jsonl  # noqa: E402

c = Checks()
tmp = tempfile.mkdtemp(prefix="hpctrain_monitor_")
QUICK = ["data.path=" + FASHION, "data.verify_hashes=false", "data.limit_train=2048", "train.epochs=2",
         "run.progress=none", "run.log_every=2"]
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")


def spread_ok(x):
    return isinstance(x, dict) and all(k in x for k in ("min", "mean", "max", "max_rank")) and \
        x["min"] <= x["mean"] <= x["max"] and x["max_rank"] in (0, 1)


on = os.path.join(tmp, "on")
r = mpirun(2, ["train", CONFIG, "run.dir=" + on, "run.monitor_seconds=0.05"] + QUICK, timeout=600)
c.check("a monitored run finishes", r.rc == 0, r.text[-3000:])
lines = read_jsonl(os.path.join(on, "metrics.jsonl")) if r.rc == 0 else []
system = [x for x in lines if x["type"] == "system"]
steps = [x for x in lines if x["type"] == "step"]
c.check("metrics.jsonl has system lines", len(system) >= 2, f"{len(system)} system lines")
c.check("some line holds both ranks' samples", any(x["ranks_sampled"] == 2 for x in system),
        str([x["ranks_sampled"] for x in system]))
c.check("cpu_utilization and rss_bytes are spreads over the ranks with the rank of the max",
        system and all(spread_ok(x["cpu_utilization"]) and spread_ok(x["rss_bytes"]) for x in system),
        json.dumps(system[:2]))
c.check("resident memory is that of a LibTorch process (over 10 MB)",
        system and all(x["rss_bytes"]["min"] > 1e7 for x in system))
c.check("a CPU run says so instead of GPU figures",
        system and all(x["nvml"] == "cpu run" and "gpu_utilization" not in x for x in system),
        json.dumps(system[-1:]))
after = [x["after_step"] for x in system]
c.check("after_step follows the step lines (non-decreasing, within the run)",
        after == sorted(after) and steps and all(0 <= a <= steps[-1]["step"] for a in after), str(after))
c.check("elapsed_s grows", all(b["elapsed_s"] >= a["elapsed_s"] for a, b in zip(system, system[1:])))

report = json.load(open(os.path.join(on, "report.json"))) if r.rc == 0 else {}
m = report.get("system", {}).get("monitor", {})
c.check("report.json system.monitor: interval, status, samples per rank",
        m.get("interval_s") == 0.05 and m.get("nvml") == "cpu run" and m.get("samples", {}).get("min", 0) >= 1,
        json.dumps(m)[:800])
c.check("report.json system.monitor: the monitor's cost",
        all(k in m for k in ("main_thread_seconds", "sampler_seconds", "main_thread_share_of_training"))
        and m["main_thread_share_of_training"] >= 0, json.dumps(m)[:800])
sysinfo = report.get("system", {})
c.check("report.json system: cpus_online and memory_bytes per rank",
        sysinfo.get("cpus_online", {}).get("min", 0) >= 1 and sysinfo.get("memory_bytes", {}).get("min", 0) > 1e8)
early = report.get("training", {}).get("early_loss", {})
c.check("report.json training.early_loss from the step lines",
        early.get("lines", 0) >= 1 and early.get("max_rise", 0) >= 1 and "warmup_steps" in early, json.dumps(early))
recs = report.get("recommendations")
c.check("report.json recommendations: an array of rule, severity, evidence, suggestion",
        isinstance(recs, list) and all(all(k in x for k in ("rule", "severity", "evidence", "suggestion"))
                                       for x in recs), json.dumps(recs)[:800])
c.check("each recommendation is printed at the end of the run",
        all(f"] {x['rule']}: " in r.out for x in recs or []), r.out[-2000:])

off = os.path.join(tmp, "off")
r = mpirun(2, ["train", CONFIG, "run.dir=" + off, "run.monitor_seconds=0"] + QUICK, timeout=600)
c.check("an unmonitored run finishes", r.rc == 0, r.text[-3000:])
if r.rc == 0:
    c.check("run.monitor_seconds=0: no system lines",
            not [x for x in read_jsonl(os.path.join(off, "metrics.jsonl")) if x["type"] == "system"])
    c.check("run.monitor_seconds=0: no system.monitor",
            "monitor" not in json.load(open(os.path.join(off, "report.json")))["system"])
c.finish()
