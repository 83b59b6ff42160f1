"""Checkpoints end to end on real ranks: a run killed with SIGKILL after a checkpoint and
resumed on the same rank count ends bitwise equal to an uninterrupted run; SIGUSR1 (as
Slurm's --signal sends) makes every rank write a checkpoint and exit with code 75, and the
resume again ends bitwise equal; a corrupt newest checkpoint is reported and the one
before it used; a changed config is refused with the differences listed; a resume on
another rank count continues within float tolerance."""
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, MPIEXEC, SOURCE, Checks, checkpoint_tensors, kill_job, mpirun, newest_checkpoint  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_ckpt_")
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
COMMON = ["data.path=" + FASHION, "data.limit_train=6000", "data.verify_hashes=false", "train.epochs=2",
          "model.channels=[8]", "model.fc_width=32", "train.batch_size=64", "run.progress=none",
          "checkpoint.every_steps=10", "checkpoint.keep=100"]


def final_state(run_dir):
    """The newest checkpoint's path and every tensor in it (model, optimizer, per-rank state)."""
    path = newest_checkpoint(run_dir)
    return path, checkpoint_tensors(path)


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def start(np_, args):
    cmd = [MPIEXEC, "-n", str(np_), "--oversubscribe", BIN, "train", CONFIG] + COMMON + args
    return subprocess.Popen(cmd, cwd=SOURCE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_checkpoint(run_dir, step, proc, limit=120):
    want = os.path.join(run_dir, "checkpoints", "step_%010d.h5" % step)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(want):
            return True
        time.sleep(0.02)
    return False


# Uninterrupted reference.
ref_dir = os.path.join(work, "ref")
r = mpirun(2, ["train", CONFIG] + COMMON + ["run.dir=" + ref_dir], timeout=300)
c.check("uninterrupted run", r.rc == 0, r.text[-2000:])
ref_path, ref = final_state(ref_dir)
ref_report = json.load(open(os.path.join(ref_dir, "report.json")))

# SIGKILL after a checkpoint, then resume=auto on the same 2 ranks.
kill_dir = os.path.join(work, "killed")
p = start(2, ["run.dir=" + kill_dir])
seen = wait_for_checkpoint(kill_dir, 40, p)
gone = kill_job(p.pid)
p.communicate()
c.check("killed with SIGKILL after the step-40 checkpoint, before the end",
        seen and gone and not os.path.exists(os.path.join(kill_dir, "report.json")), "")
r = mpirun(2, ["train", CONFIG] + COMMON + ["run.dir=" + kill_dir, "checkpoint.resume=auto"], timeout=300)
c.check("resume after SIGKILL", r.rc == 0 and "resuming from" in r.out, r.text[-2000:])
path, got = final_state(kill_dir)
c.check("final parameters, optimizer state and batch-norm statistics bitwise equal to the uninterrupted run",
        os.path.basename(path) == os.path.basename(ref_path) and same(got, ref),
        [k for k in ref if k in got and not np.array_equal(ref[k], got[k])][:5])
rep = json.load(open(os.path.join(kill_dir, "report.json")))
c.check("report: resumed_from, same epoch figures", rep["training"]["resumed_from"] is not None and
        [e["train_loss"] for e in rep["epochs"]] == [e["train_loss"] for e in ref_report["epochs"]] and
        [e["val_loss"] for e in rep["epochs"]] == [e["val_loss"] for e in ref_report["epochs"]] and
        rep["final"]["test_loss"] == ref_report["final"]["test_loss"],
        json.dumps([rep["epochs"], ref_report["epochs"]])[:1500])

# SIGUSR1 (forwarded by mpirun to every rank): checkpoint at the next step, exit 75.
sig_dir = os.path.join(work, "signal")
p = start(2, ["run.dir=" + sig_dir])
wait_for_checkpoint(sig_dir, 20, p)
t0 = time.monotonic()
os.kill(p.pid, signal.SIGUSR1)
out, err = p.communicate(timeout=120)
c.check(f"SIGUSR1: exit 75 with a checkpoint in {time.monotonic() - t0:.1f}s",
        p.returncode == 75 and "preempted by SIGUSR1" in err and err.count("hpctrain: error") == 1, err[-2000:])
r = mpirun(2, ["train", CONFIG] + COMMON + ["run.dir=" + sig_dir, "checkpoint.resume=auto"], timeout=300)
_, got = final_state(sig_dir)
c.check("resume after the signal ends bitwise equal", r.rc == 0 and same(got, ref), r.text[-1500:])

# A corrupt newest checkpoint: reported, the previous one used.
newest = sorted(glob.glob(os.path.join(kill_dir, "checkpoints", "step_*.h5")))[-1]
with h5py.File(newest, "r+") as f:
    f["model/parameters/00000"][...] = f["model/parameters/00000"][()] + 1
r = mpirun(2, ["train", CONFIG] + COMMON + ["run.dir=" + kill_dir, "checkpoint.resume=auto"], timeout=300)
c.check("corrupt checkpoint reported and the one before it used",
        r.rc == 0 and "checksum mismatch" in r.err and os.path.basename(newest) in r.err and "resuming from" in r.out
        and os.path.basename(newest) not in r.out.split("resuming from")[1].splitlines()[0], r.text[-2000:])

# A changed config is refused, naming the change; a safe change is accepted.
r = mpirun(2, ["train", CONFIG] + COMMON + ["run.dir=" + sig_dir, "checkpoint.resume=auto", "optimizer.lr=0.01"])
c.check("changed optimizer.lr refused with the difference listed",
        r.rc == 2 and "optimizer.lr: 0.002 -> 0.01" in r.err, r.text[-1500:])
r = mpirun(2, ["train", CONFIG] + COMMON + ["run.dir=" + sig_dir, "checkpoint.resume=auto", "train.epochs=3",
                                             "run.log_every=7"], timeout=300)
rep = json.load(open(os.path.join(sig_dir, "report.json"))) if r.rc == 0 else {}
c.check("more epochs (a safe change) continue the run", r.rc == 0 and len(rep["epochs"]) == 3, r.text[-1500:])

# Another rank count: 2 ranks preempted, resumed on 1; no batch norm or dropout, whose
# per-rank statistics and draws depend on the rank count.
plain = ["model.batch_norm=false", "model.dropout=0"]
a_dir, b_dir = os.path.join(work, "plain_ref"), os.path.join(work, "plain_resumed")
r = mpirun(2, ["train", CONFIG] + COMMON + plain + ["run.dir=" + a_dir], timeout=300)
p = start(2, plain + ["run.dir=" + b_dir])
wait_for_checkpoint(b_dir, 30, p)
os.kill(p.pid, signal.SIGUSR1)
p.communicate(timeout=120)
r2 = mpirun(1, ["train", CONFIG] + COMMON + plain + ["run.dir=" + b_dir, "checkpoint.resume=auto"], timeout=300)
_, a = final_state(a_dir)
_, b = final_state(b_dir)
params = [k for k in a if k.startswith("model/parameters/")]
worst = max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(a[k]) + 1e-3))) for k in params) if r2.rc == 0 else -1
c.check(f"resumed on 1 rank: parameters within float tolerance of the 2-rank run (worst {worst:.1e})",
        r.rc == 0 and r2.rc == 0 and 0 <= worst < 1e-3, r2.text[-1500:])
c.finish()
