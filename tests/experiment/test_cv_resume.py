"""A preempted cross-validation resumes without repeating finished folds: SIGUSR1 to mpirun
(what Slurm's --signal sends) while the folds run stops the running ones at their next step;
the finished ones are recorded in RUN_DIR/tasks, the job exits with 75, and a rerun with
checkpoint.resume=auto trains only the rest. Every fold's metrics equal those of an
uninterrupted run (same folds, same seeds). A changed config refuses the record."""
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, MPIEXEC, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn_cv.json")
common = ["data.path=" + FASHION, "data.limit_train=3000", "data.verify_hashes=false", "model.channels=[8]",
          "model.fc_width=32", "train.epochs=2", "train.batch_size=64", "cv.folds=4", "cv.ranks_per_group=1",
          "run.progress=none"]


def metrics(run_dir):
    report = json.load(open(os.path.join(run_dir, "cv_report.json")))
    return {f["fold"]: f["metrics"] for f in report["folds_detail"]}, report


reference = tempfile.mkdtemp(prefix="hpctrain_cv_ref_")
r = mpirun(2, ["train", CONFIG, *common, "run.dir=" + reference], timeout=900)
c.check("uninterrupted cross-validation exits 0", r.rc == 0, r.text[-3000:])

run_dir = tempfile.mkdtemp(prefix="hpctrain_cv_resume_")
args = [MPIEXEC, "-n", "2", "--oversubscribe", BIN, "train", CONFIG, *common, "run.dir=" + run_dir,
        "checkpoint.resume=auto"]
p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline and p.poll() is None and not glob.glob(os.path.join(run_dir, "tasks", "rung*.json")):
    time.sleep(0.05)
p.send_signal(signal.SIGUSR1)
out, err = p.communicate(timeout=300)
recorded = glob.glob(os.path.join(run_dir, "tasks", "rung*.json"))
c.check("SIGUSR1: exit 75 with the finished folds recorded",
        p.returncode == 75 and "preempted" in err and "checkpoint.resume=auto" in err and 1 <= len(recorded) < 4
        and not os.path.exists(os.path.join(run_dir, "cv_report.json")),
        f"rc {p.returncode}, recorded {recorded}\n{err[-2500:]}")

r = mpirun(2, ["train", CONFIG, *common, "run.dir=" + run_dir, "checkpoint.resume=auto"], timeout=900)
c.check("rerun with checkpoint.resume=auto: reuses the recorded folds and finishes",
        r.rc == 0 and f"resuming: {len(recorded)} finished task(s)" in r.out, r.text[-3000:])
if r.rc == 0 and os.path.exists(os.path.join(reference, "cv_report.json")):
    resumed, report = metrics(run_dir)
    expected, _ = metrics(reference)
    c.check("every fold's metrics equal the uninterrupted run's", resumed == expected,
            json.dumps({"resumed": resumed, "expected": expected})[:3000])
    c.check("4 folds ok", report["tasks_ok"] == 4 and report["tasks_failed"] == 0, str(report["tasks_ok"]))

r = mpirun(2, ["train", CONFIG, *common, "run.dir=" + run_dir, "checkpoint.resume=auto", "optimizer.lr=0.5"],
           timeout=300)
c.check("a changed config refuses the recorded tasks", r.rc == 2 and "holds the finished tasks of a different config"
        in r.err, r.text[-2000:])
c.finish()
