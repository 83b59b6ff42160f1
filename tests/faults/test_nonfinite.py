"""Non-finite loss and gradients: train.nonfinite=abort|skip applied identically on every
rank (docs/reliability.md, docs/outputs.md).

The fault is real, not injected through a hidden switch: a small regression table is
imported, and one training row is given features of 3e38 (finite, so the loader accepts it;
its hash is recomputed as docs/data-format.md describes). Without input normalization that
row overflows the forward pass, so the loss of the one global batch holding it is Inf or
NaN once per epoch, on the one rank whose slice holds the row. The other rank's loss is
finite: it learns of the fault only through the gradient reduction. Every case runs on
2 ranks and checks that both agree."""
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, MPIEXEC, SOURCE, Checks, read_jsonl, run  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_nonfinite_")
CONFIG = os.path.join(SOURCE, "configs", "diabetes_mlp.json")
RANK_EXIT = '"$@"; rc=$?; echo "rank-exit ${OMPI_COMM_WORLD_RANK:-$PMI_RANK} $rc" >&2; exit $rc'

# 160 rows of 6 features, a linear target: 128 training rows, 32 test rows.
table = os.path.join(work, "table.csv")
rng = np.random.default_rng(3)
x = rng.normal(size=(160, 6))
y = x @ np.array([0.5, -1.0, 0.25, 2.0, 0.0, 1.0]) + 0.1 * rng.normal(size=160)
with open(table, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([f"f{i}" for i in range(6)] + ["y"])
    for row, target in zip(x, y):
        w.writerow([f"{v:.6f}" for v in row] + [f"{target:.6f}"])
DATA = os.path.join(work, "data.h5")
r = run([BIN, "import", "csv", table, "--label", "y", "--test-fraction", "0.2", "--output", DATA])
assert r.rc == 0, r.text
BAD_ROW = 37
with h5py.File(DATA, "r+") as f:
    features = f["train/features"]
    values = features[()]
    values[BAD_ROW, :] = 3e38
    features[...] = values
    features.attrs["sha256"] = np.bytes_(hashlib.sha256(values.tobytes()).hexdigest())  # as the importer writes it

COMMON = ["data.path=" + DATA, "data.val_fraction=0", "data.normalize=false", "model.hidden=[16]",
          "train.batch_size=16", "run.log_every=1", "run.progress=none", "schedule.name=constant",
          "checkpoint.at_end=false", "train.test_at_end=false"]


def train(name, extra, timeout=180):
    run_dir = os.path.join(work, name)
    cmd = [MPIEXEC, "-n", "2", "--oversubscribe", "sh", "-c", RANK_EXIT, "sh", BIN, "train", CONFIG]
    cmd += COMMON + ["run.dir=" + run_dir] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=SOURCE)
    codes = sorted(int(line.split()[2]) for line in p.stderr.splitlines() if line.startswith("rank-exit "))
    return p.returncode, p.stdout, p.stderr, codes, run_dir


def skipped_lines(run_dir):
    return [line for line in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
            if line["type"] == "step" and line.get("skipped")]


def report(run_dir):
    with open(os.path.join(run_dir, "report.json")) as f:
        return json.load(f)


def errors(err):
    return [line for line in err.splitlines() if line.startswith("hpctrain: error")]


# skip: the run finishes; the row's batch is skipped once per epoch on both ranks.
rc, out, err, codes, run_dir = train("skip", ["train.epochs=2", "train.nonfinite=skip"])
ok = rc == 0 and codes == [0, 0]
skipped = skipped_lines(run_dir) if ok else []
first = skipped[0]["step"] if skipped else None
c.check("[skip] 2 ranks finish; two steps (one per epoch) skipped, each logged with loss null",
        ok and len(skipped) == 2 and all(s["loss"] is None for s in skipped)
        and skipped[-1]["nonfinite_skipped"] == 2, (out + err)[-3000:])
if ok:
    rep = report(run_dir)
    epochs = rep["epochs"]
    c.check("[skip] report.json nonfinite: policy skip, skipped_steps 2; epoch losses finite",
            rep["nonfinite"] == {"policy": "skip", "limit": 10, "applies": True, "skipped_steps": 2}
            and all(np.isfinite(e["train_loss"]) for e in epochs), json.dumps(rep.get("nonfinite")))
print(f"  the row's batch is step {first}")

# abort (the default): both ranks stop at that step, one message naming it.
rc, out, err, codes, _ = train("abort", ["train.epochs=2"])
lines = errors(err)
c.check(f"[abort] exit non-zero on both ranks, one message naming step {first}",
        rc != 0 and len(codes) == 2 and all(code != 0 for code in codes) and len(lines) == 1
        and "train.nonfinite=abort" in lines[0] and f"at step {first};" in lines[0], err[-3000:])
if lines:
    print("  " + lines[0])

# skip past the limit: the second skipped step ends the run.
rc, out, err, codes, run_dir = train("limit", ["train.epochs=3", "train.nonfinite=skip", "train.nonfinite_limit=1"])
lines = errors(err)
c.check("[skip, limit 1] the second skipped step ends the run on both ranks with one message",
        rc != 0 and len(codes) == 2 and all(code != 0 for code in codes) and len(lines) == 1
        and "more than train.nonfinite_limit (1)" in lines[0], err[-3000:])

# The fused optimizer decides on the device and settles at the log steps: same outcome.
fused = ["optimizer.name=adam", "optimizer.fused=on"]
rc, out, err, codes, run_dir = train("fused", ["train.epochs=2", "train.nonfinite=skip"] + fused)
ok = rc == 0 and codes == [0, 0]
c.check("[skip, fused optimizer] skips the same steps without a host decision per step",
        ok and [s["step"] for s in skipped_lines(run_dir)] == [s["step"] for s in skipped]
        and report(run_dir)["nonfinite"]["skipped_steps"] == 2, (out + err)[-3000:])
rc, out, err, codes, _ = train("fused_abort", ["train.epochs=2"] + fused)
lines = errors(err)
c.check(f"[abort, fused optimizer] ends at the log step after step {first}, naming it",
        rc != 0 and len(codes) == 2 and all(code != 0 for code in codes) and len(lines) == 1
        and f"at step {first};" in lines[0], err[-3000:])

# The count goes on across a resume (the checkpoint's skipped_steps) and towards the limit.
once = ["train.nonfinite=skip", "checkpoint.at_end=true"]
rc1, out1, err1, _, run_dir = train("resumed", ["train.epochs=1"] + once)
rc2, out2, err2, codes, run_dir = train("resumed", ["train.epochs=2", "checkpoint.resume=auto"] + once)
c.check("[skip, resumed after epoch 1] report.json counts both epochs' skipped steps",
        rc1 == 0 and rc2 == 0 and "resuming from" in out2 and report(run_dir)["nonfinite"]["skipped_steps"] == 2,
        (out1 + err1 + out2 + err2)[-3000:])
rc, out, err, codes, run_dir = train("resumed", ["train.epochs=3", "checkpoint.resume=auto",
                                                 "train.nonfinite_limit=2"] + once)
c.check("[skip, resumed] the third skipped step is past a limit of 2",
        rc != 0 and len(codes) == 2 and all(code != 0 for code in codes)
        and "more than train.nonfinite_limit (2)" in err, (out + err)[-3000:])

# Two pipeline stages: the loss lives on the last stage; the first must skip too.
pipeline = ["parallel.pipeline_stages=2", "model.hidden=[16,16]", "checkpoint.every_steps=0"]
rc, out, err, codes, run_dir = train("pipeline", ["train.epochs=2", "train.nonfinite=skip"] + pipeline)
ok = rc == 0 and codes == [0, 0]
c.check("[skip, 2 pipeline stages] both stages skip the same two steps",
        ok and [s["step"] for s in skipped_lines(run_dir)] == [s["step"] for s in skipped]
        and report(run_dir)["nonfinite"]["skipped_steps"] == 2, (out + err)[-3000:])
c.finish()
