"""Regression: the default CNN config on 2 ranks reaches >= 89% Fashion-MNIST test
accuracy after 2 epochs, and report.json holds every figure, filled from measurement."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun, read_jsonl  # noqa: E402

c = Checks()
run_dir = tempfile.mkdtemp(prefix="hpctrain_default_")
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json"), "data.path=" + FASHION,
               "run.dir=" + run_dir, "run.progress=lines"], timeout=1400)
c.check("training exits 0", r.rc == 0, r.text[-4000:])
report = json.load(open(os.path.join(run_dir, "report.json")))
acc = report["final"]["test_accuracy"]
print(f"test accuracy {acc:.4f}, {report['training']['samples_per_s']:.0f} samples/s")
c.check("test accuracy >= 0.89 after 2 epochs", acc >= 0.89 and report["training"]["epochs_run"] == 2, str(acc))
c.check("world recorded", report["world"]["size"] == 2 and len(report["world"]["threads_per_rank"]) == 2, "")
for phase in ("data", "forward", "backward", "comm_exposed", "comm_total", "optimizer"):
    s = report["time_per_step_ms"][phase]
    c.check(f"phase {phase} measured on every rank",
            s["min"] > 0 and s["min"] <= s["mean"] <= s["max"] and len(s["per_rank"]) == 2, json.dumps(s))
c.check("exposed communication share reported", 0 < report["communication"]["exposed_share_of_step"] < 1, "")
c.check("exposed communication within total", report["time_per_step_ms"]["comm_exposed"]["mean"] <=
        report["time_per_step_ms"]["comm_total"]["mean"] + 0.5, json.dumps(report["time_per_step_ms"]))
c.check("eval time measured", report["time_total_s"]["eval"]["min"] > 0, "")
c.check("peak RSS per rank", report["memory"]["peak_rss_bytes"]["min"] > 50e6, "")
c.check("samples/s measured", report["training"]["samples_per_s"] > 0, "")
c.check("per-epoch train/validation figures", all(
    0 < e["train_accuracy"] <= 1 and 0 < e["val_accuracy"] <= 1 and e["train_loss"] > 0 for e in report["epochs"]), "")
conf = report["final"]["test_confusion"]
c.check("confusion matrix sums to the test set", sum(map(sum, conf)) == 10000, "")
lines = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
# (and the system monitor's lines, every run.monitor_seconds: tests/run/test_monitor.py)
c.check("metrics.jsonl has step, epoch and test lines",
        {l["type"] for l in lines} - {"system"} == {"step", "epoch", "test"}
        and sum(l["type"] == "epoch" for l in lines) == 2, "")
cfg = json.load(open(os.path.join(run_dir, "config.json")))
c.check("resolved config written with overrides applied", cfg["data"]["path"] == FASHION and cfg["run"]["dir"] == run_dir, "")
c.finish()
