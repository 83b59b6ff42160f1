"""Helpers for hpctrain's Python-driven tests: find the binary, launch real MPI ranks
with a time limit, make small data sets. Plain Python; no test framework needed."""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("HPCTRAIN_BIN", "build/hpctrain")
MPIEXEC = os.environ.get("HPCTRAIN_MPIEXEC", "mpiexec")
SOURCE = os.environ.get("HPCTRAIN_SOURCE_DIR", os.getcwd())
TEST_DATA = os.environ.get("HPCTRAIN_TEST_DATA", os.path.join(SOURCE, "build", "test-data"))
FASHION = os.path.join(TEST_DATA, "fashion-mnist.h5")


class Result:
    def __init__(self, rc, out, err, seconds):
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds

    @property
    def text(self):
        return self.out + self.err


def run(args, timeout=120, cwd=None):
    start = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd or SOURCE)
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - start)


def mpirun(np, args, timeout=120, cwd=None):
    return run([MPIEXEC, "-n", str(np), "--oversubscribe", BIN] + list(args), timeout=timeout, cwd=cwd)


def newest_checkpoint(run_dir):
    """The newest step_*.h5 in RUN_DIR/checkpoints ("" when there is none)."""
    import glob
    files = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.h5")))
    return files[-1] if files else ""


def checkpoint_tensors(path, prefixes=("model/", "optimizer/", "ranks/")):
    """Every dataset of a checkpoint whose name starts with one of `prefixes`, by name: by
    default the parameters, optimizer state and every rank's own state (generators too)."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith(prefixes):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def kill_job(pid, limit=30):
    """SIGKILL a job started with start_new_session=True (pid: mpiexec's, its session id) and
    every rank of it, and wait until they are gone. Open MPI gives each rank its own process
    group, so killing mpiexec's group alone leaves the ranks running; they share its session."""
    def members():
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # After "(comm)": state, ppid, pgrp, session, ...
            if int(stat[stat.rindex(")") + 2:].split()[3]) == pid and stat[stat.rindex(")") + 2] != "Z":
                out.append(int(entry))
        return out

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        alive = members()
        if not alive:
            return True
        for victim in alive:
            try:
                os.kill(victim, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return False


def kill_once_written(cmd, path, limit=240):
    """Starts CMD (an mpiexec command line) in its own session, waits until PATH exists (or the
    job ends, or LIMIT s pass), then SIGKILLs the whole job (kill_job). Returns (seen, gone):
    whether PATH was there at the kill, and whether every process of the job is gone."""
    import subprocess
    p = subprocess.Popen(cmd, cwd=SOURCE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and p.poll() is None and not os.path.exists(path):
        time.sleep(0.02)
    seen = os.path.exists(path)
    gone = kill_job(p.pid)
    p.communicate()
    return seen, gone


def write_idx(path, array_bytes, dims):
    header = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(array_bytes))


def make_idx_dir(n_train=64, n_test=32, labels_mod=10, side=8):
    """A folder of tiny MNIST-style idx.gz files with deterministic contents."""
    d = tempfile.mkdtemp(prefix="hpctrain_idx_")
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = bytes((i * 37 + j) % 256 for i in range(n) for j in range(side * side))
        labels = bytes(i % labels_mod for i in range(n))
        write_idx(os.path.join(d, prefix + "-images-idx3-ubyte.gz"), images, [n, side, side])
        write_idx(os.path.join(d, prefix + "-labels-idx1-ubyte.gz"), labels, [n])
    return d


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Checks:
    """Collects named checks; prints 'N passed, M failed' and exits accordingly."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed.append(name)
            print(f"FAIL {name}\n{detail}")
        sys.stdout.flush()

    def finish(self):
        print(f"{self.passed} passed, {len(self.failed)} failed")
        sys.exit(1 if self.failed else 0)
