"""A rank that dies or stops (docs/reliability.md): one rank of two is sent SIGKILL (not
mpirun) mid-step and mid-checkpoint, or SIGSTOP while the other waits for it.

- SIGKILL: the job ends within a bounded time with the launcher's message naming the dead
  rank, the newest complete checkpoint is intact (a half-written one stays a .tmp that no
  resume reads), and checkpoint.resume=auto then ends bitwise equal to an uninterrupted run.
  For "mid-checkpoint" the writing rank is killed while it writes: a test-only LD_PRELOAD
  shim (fault_shim.c, op slow) makes each write of a checkpoint take 1.5 s.
- SIGSTOP with comm.timeout=5: the job ends within a bounded time, and the message names the
  stopped rank, whichever of the two it is. The uninterrupted reference run has comm.timeout
  set too, so the watchdog is also shown not to fire on a healthy run (evaluation included)."""
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import (BIN, MPIEXEC, SOURCE, Checks, checkpoint_tensors, make_idx_dir, newest_checkpoint,  # noqa: E402
                     read_jsonl, run)

SHIM = os.environ.get("HPCTRAIN_FAULT_SHIM", "")
c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_rank_faults_")
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json")
DATA = os.path.join(work, "data.h5")
r = run([BIN, "import", "mnist", "--source", make_idx_dir(n_train=2600, n_test=64), "--output", DATA])
assert r.rc == 0, r.text
# 9 steps an epoch whose time is almost all computation (a wide MLP, a large batch, no batch
# norm): a signal lands in a step, rarely in a collective.
COMMON = ["data.path=" + DATA, "model.hidden=[1024,1024]", "model.batch_norm=false", "model.dropout=0",
          "train.early_stop_patience=0", "train.batch_size=256", "train.epochs=10", "run.progress=none",
          "run.log_every=1", "checkpoint.every_steps=20", "checkpoint.keep=3", "comm.timeout=20"]
BOUND = 60  # seconds from the fault to the end of the job


def rank_pid(tag, rank, limit=60):
    """The pid of `rank` of the launch tagged `tag` (from its environment)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if (b"OMPI_COMM_WORLD_RANK=%d" % rank) in env and b"train" in cmdline \
                    and b"HPCTRAIN_RUN_TAG=" + tag.encode() in env:
                return int(pid)
        time.sleep(0.05)
    return None


def wait_until(predicate, proc, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def steps_logged(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        return sum(1 for line in read_jsonl(path) if line["type"] == "step")
    except (OSError, ValueError):
        return 0  # a line being written


def ended(proc, t0):
    try:
        out, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    return time.monotonic() - t0, out, err


def final_state(run_dir):
    """Every stored tensor of the newest checkpoint (model, optimizer, per-rank state)."""
    path = newest_checkpoint(run_dir)
    return os.path.basename(path), checkpoint_tensors(path)


def same(a, b):
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])


def start_tagged(run_dir, extra, env=None, common=None):
    """mpirun on 2 ranks; the ranks carry HPCTRAIN_RUN_TAG=run_dir, so rank_pid finds them."""
    env = dict(env or {}, HPCTRAIN_RUN_TAG=run_dir)
    cmd = [MPIEXEC, "-n", "2", "--oversubscribe"]
    for k in env:
        cmd += ["-x", k]
    cmd += [BIN, "train", CONFIG] + (common or COMMON) + ["run.dir=" + run_dir] + extra
    return subprocess.Popen(cmd, cwd=SOURCE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, **env))


# The uninterrupted reference (comm.timeout set: the watchdog must stay quiet).
ref_dir = os.path.join(work, "ref")
p = start_tagged(ref_dir, [])
out, err = p.communicate(timeout=600)
c.check("uninterrupted reference run with comm.timeout=20 finishes", p.returncode == 0, (out + err)[-2000:])
reference = final_state(ref_dir) if p.returncode == 0 else ("", {})


def kill_case(name, rank, when, env=None):
    run_dir = os.path.join(work, name)
    p = start_tagged(run_dir, [], env)
    pid = rank_pid(run_dir, rank)
    reached = pid is not None and wait_until(lambda: when(run_dir), p)
    t0 = time.monotonic()
    if reached:
        os.kill(pid, signal.SIGKILL)
    seconds, out, err = ended(p, t0)
    good = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.h5")))
    c.check(f"[{name}] SIGKILL of rank {rank}: the job ends within {BOUND} s with a message naming the rank",
            reached and seconds is not None and p.returncode != 0 and "exited on signal 9" in err
            and f"rank {rank}" in err, f"reached {reached} seconds {seconds}\n{(out + err)[-3000:]}")
    print(f"  ended {seconds and round(seconds, 1)} s after the kill; newest complete checkpoint "
          f"{good and os.path.basename(good[-1])}")
    r = run([MPIEXEC, "-n", "2", "--oversubscribe", BIN, "train", CONFIG] + COMMON +
            ["run.dir=" + run_dir, "checkpoint.resume=auto"], timeout=600)
    resumed_from = good[-1] if good else "?"
    c.check(f"[{name}] resume=auto continues from {os.path.basename(resumed_from)} and ends bitwise equal to the "
            "uninterrupted run", r.rc == 0 and "resuming from " + resumed_from in r.out
            and same(final_state(run_dir), reference), r.text[-2000:])


def mid_step(run_dir):
    return steps_logged(run_dir) >= 50  # after the step-40 checkpoint, between two of them


def mid_checkpoint(run_dir):
    return bool(glob.glob(os.path.join(run_dir, "checkpoints", "step_0000000040.h5.tmp")))


kill_case("mid-step", 1, mid_step)
if SHIM and os.path.exists(SHIM):
    slow = {"LD_PRELOAD": SHIM, "HPCTRAIN_FAULT_PATH": "checkpoints/step_", "HPCTRAIN_FAULT_OP": "slow",
            "HPCTRAIN_FAULT_AFTER": "1500"}
    kill_case("mid-checkpoint", 0, mid_checkpoint, slow)
else:
    c.check("the fault shim is built", False, f"HPCTRAIN_FAULT_SHIM={SHIM!r}")


# A rank stopped inside a collective is named by its silence (its watchdog thread stops
# beating), one stopped elsewhere also by its count of points; a try where neither named it
# (a stop on another node, not the case here) is repeated, at most twice.
STOP = COMMON + ["train.epochs=100", "checkpoint.every_steps=0", "checkpoint.at_end=false", "comm.timeout=5"]


def stop_case(rank, attempt=1):
    run_dir = os.path.join(work, f"stopped{rank}_{attempt}")
    p = start_tagged(run_dir, [], common=STOP)
    pid = rank_pid(run_dir, rank)
    reached = pid is not None and wait_until(lambda: steps_logged(run_dir) >= 20, p)
    t0 = time.monotonic()
    if reached:
        os.kill(pid, signal.SIGSTOP)
    seconds, out, err = ended(p, t0)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)  # should be gone already
        except ProcessLookupError:
            pass
    lines = [line for line in err.splitlines() if line.startswith("hpctrain: error")]
    if lines:
        print(f"  try {attempt}: after {seconds and round(seconds, 1)} s: {lines[0]}")
    if len(lines) == 1 and "no rank is behind" in lines[0] and attempt < 3:
        return stop_case(rank, attempt + 1)
    c.check(f"[stalled rank {rank}] SIGSTOP with comm.timeout=5: the job ends within {BOUND} s, one message "
            f"naming rank {rank}", reached and seconds is not None and p.returncode != 0 and len(lines) == 1
            and "comm.timeout" in lines[0] and f"stalled: rank {rank} (" in lines[0],
            f"reached {reached} seconds {seconds}\n{(out + err)[-3000:]}")


stop_case(1)
stop_case(0)
c.finish()
