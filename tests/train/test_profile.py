"""run.profile_steps: a Kineto trace of the chosen steps lands in RUN_DIR/profile_rank<R>.json
on every rank, in the Chrome trace format, and analysis/profile_summary.py reads it; without
the key no trace is written."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_profile_")
base = ["train", os.path.join(SOURCE, "configs", "fashion_mnist_fast.json"), "data.path=" + FASHION,
        "data.verify_hashes=false", "data.limit_train=2048", "train.epochs=1", "train.max_steps=6",
        "train.test_at_end=false", "run.progress=none"]
run_dir = os.path.join(work, "traced")
r = mpirun(2, base + ["run.dir=" + run_dir, "run.profile_steps=2", "run.profile_start=3"], timeout=300)
c.check("a traced run exits 0", r.rc == 0, r.text[-3000:])
for rank in (0, 1):
    path = os.path.join(run_dir, f"profile_rank{rank}.json")
    events = []
    if os.path.exists(path):
        with open(path) as f:
            trace = json.load(f)
        events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    names = {e.get("name") for e in ops}
    c.check(f"rank {rank}: trace with the training step's operators ({len(ops)} operators)",
            len(ops) > 100 and "aten::convolution" in names and any("Backward" in (n or "") for n in names),
            path)
# Two steps traced: the operators of two forwards, not the whole run's six.
with open(os.path.join(SOURCE, "configs", "fashion_mnist_fast.json")) as f:
    layers = len(json.load(f)["model"]["channels"])
convs = sum(1 for e in events if e.get("cat") == "cpu_op" and e.get("name") == "aten::convolution")
c.check(f"only the traced steps are in it ({convs} convolution calls: 2 steps of a {layers}-convolution CNN)",
        convs == 2 * layers, "")
s = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "profile_summary.py"),
                    os.path.join(run_dir, "profile_rank0.json"), "--steps", "2", "--top", "5"],
                   capture_output=True, text=True)
c.check("profile_summary.py reads it", s.returncode == 0 and "CPU operator" in s.stdout, s.stdout + s.stderr)
plain = os.path.join(work, "plain")
r = mpirun(1, base + ["run.dir=" + plain], timeout=300)
c.check("no trace without run.profile_steps",
        r.rc == 0 and not any(n.startswith("profile_") for n in os.listdir(plain)), r.text[-2000:])
c.finish()
