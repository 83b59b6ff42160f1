"""Checkpoints of a pipeline grid are whole-model files any layout reads: a run on 2 stages x
2 replicas killed with SIGKILL after a checkpoint and resumed on the same grid ends bitwise
equal to an uninterrupted run (parameters, optimizer state, every replica's batch-norm
statistics, every rank's generator); its checkpoint holds the same tensors as a 1-rank
checkpoint; a mid-run checkpoint of the grid continues on 1 rank and on 1 stage x 4
replicas, and a 1-rank checkpoint on 2 stages, each ending where the uninterrupted run does
within float tolerance; export writes the whole model."""
import glob
import json
import os
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import (BIN, FASHION, MPIEXEC, SOURCE, Checks, checkpoint_tensors, kill_once_written,  # noqa: E402
                     mpirun, run)

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json")
work = tempfile.mkdtemp(prefix="hpctrain_pipeckpt_")
common = ["data.path=" + FASHION, "data.verify_hashes=false", "data.limit_train=2560", "run.progress=none",
          "model.hidden=[48,32,32]", "train.epochs=2", "train.batch_size=64", "run.log_every=5",
          "train.early_stop_patience=0", "run.threads=1", "checkpoint.every_steps=10", "checkpoint.keep=100"]
# An explicit split: the balanced one follows measured block times, which vary run to run.
grid = ["parallel.pipeline_stages=2", "parallel.microbatches=4", "parallel.stage_split=[1]"]
# Dropout and batch norm: the generators and per-replica statistics must come back too.
noisy = ["model.dropout=0.1", "model.batch_norm=true"]
# Without them a continuation on another layout follows the same trajectory.
plain = ["model.dropout=0", "model.batch_norm=false"]


def checkpoint(run_dir, step=None):
    files = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*.h5")))
    if step is not None:
        return os.path.join(run_dir, "checkpoints", "step_%010d.h5" % step)
    return files[-1] if files else ""


def train(name, np_, *extra, timeout=300):
    run_dir = os.path.join(work, name)
    r = mpirun(np_, ["train", CONFIG, *common, "run.dir=" + run_dir, *extra], timeout=timeout)
    return r, run_dir


# Uninterrupted reference on the 2 x 2 grid (80 steps).
r, ref_dir = train("ref", 4, *grid, *noisy)
c.check("2 stages x 2 replicas with checkpoints trains", r.rc == 0, r.text[-2000:])
ref = checkpoint_tensors(checkpoint(ref_dir))
with h5py.File(checkpoint(ref_dir), "r") as f:
    attrs = {k: f.attrs[k] for k in ("world_size", "pipeline_stages", "replicas")}
c.check(f"the checkpoint records the grid ({attrs})",
        attrs == {"world_size": 4, "pipeline_stages": 2, "replicas": 2}, "")
c.check("it holds every rank's own state (2 replicas x 2 stages of generators and sums)",
        all(k in ref for k in ("ranks/0/rng", "ranks/1/rng", "ranks/0/stages/1/rng", "ranks/1/stages/1/rng")),
        "\n".join(sorted(k for k in ref if k.startswith("ranks/"))[:20]))

# The same tensors, names and shapes as a checkpoint written by 1 rank.
r, one_dir = train("one_noisy", 1, "train.max_steps=10")
one = checkpoint_tensors(checkpoint(one_dir, 10), ("model/", "optimizer/"))
mine = checkpoint_tensors(checkpoint(ref_dir, 10), ("model/", "optimizer/"))
c.check("a grid checkpoint has the whole model's parameters and optimizer state, as 1 rank's has",
        r.rc == 0 and one.keys() == mine.keys() and all(one[k].shape == mine[k].shape for k in one),
        str(sorted(set(one) ^ set(mine))[:10]))

# SIGKILL after the step-30 checkpoint, resume=auto on the same grid: bitwise equal.
kill_dir = os.path.join(work, "killed")
cmd = [MPIEXEC, "-n", "4", "--oversubscribe", BIN, "train", CONFIG, *common, *grid, *noisy, "run.dir=" + kill_dir]
want = checkpoint(kill_dir, 30)
seen, gone = kill_once_written(cmd, want)
c.check("killed with SIGKILL after the step-30 checkpoint, before the end",
        seen and gone and not os.path.exists(os.path.join(kill_dir, "report.json")), "")
r, _ = train("killed", 4, *grid, *noisy, "checkpoint.resume=auto")
c.check("resume=auto on the same grid", r.rc == 0 and "2 stages x 2 replicas" in r.out, r.text[-2000:])
got = checkpoint_tensors(checkpoint(kill_dir))
diff = [k for k in ref if k not in got or not np.array_equal(ref[k], got[k])]
c.check("after the resume every tensor of the final checkpoint is bitwise equal to the uninterrupted run's",
        got.keys() == ref.keys() and not diff, str(diff[:10]))
a = json.load(open(os.path.join(ref_dir, "report.json")))["final"]
b = json.load(open(os.path.join(kill_dir, "report.json")))["final"]
c.check("and so are the final figures", a == b, json.dumps(a) + "\n" + json.dumps(b))

# Export of a grid checkpoint: the whole model.
r = run([BIN, "export", ref_dir])
exported = os.path.join(ref_dir, "export", "model.safetensors")
c.check("export of a grid checkpoint writes the whole model", r.rc == 0 and os.path.exists(exported), r.text[-1500:])
sys.path.insert(0, os.path.join(SOURCE, "analysis"))
from hpctrain_model import load  # noqa: E402
model, desc = load(os.path.join(ref_dir, "export"))
got_params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
with h5py.File(checkpoint(ref_dir), "r") as f:
    stored = {f[n].attrs["name"].decode() if isinstance(f[n].attrs["name"], bytes) else f[n].attrs["name"]:
              f[n][()] for n in (f"model/parameters/{k}" for k in f["model/parameters"])}
c.check(f"the exported parameters are the checkpoint's ({len(stored)} tensors)",
        len(stored) > 0 and all(k in got_params and np.array_equal(got_params[k], v) for k, v in stored.items()),
        str(sorted(set(stored) - set(got_params))[:5]))

# Cross-layout continuation, without dropout and batch norm: the grid's step-30 checkpoint (mid-epoch) on
# 1 rank and on 1 x 4, a 1-rank step-30 checkpoint on 2 stages; each ends at step 80 where
# the uninterrupted grid run does, within float tolerance (other summation orders).
r, plain_dir = train("plain_ref", 4, *grid, *plain)
c.check("plain 2 x 2 reference trains", r.rc == 0, r.text[-2000:])
final = checkpoint_tensors(checkpoint(plain_dir), ("model/",))
r, one_plain = train("plain_one", 1, *plain)
c.check("plain 1-rank run", r.rc == 0, r.text[-2000:])
c.check("which ends within 1e-3 relative of the grid run", r.rc == 0 and max(
    float(np.max(np.abs(v - final[k]) / (np.abs(final[k]) + 1e-3)))
    for k, v in checkpoint_tensors(checkpoint(one_plain), ("model/",)).items()) < 1e-3, "")
for name, np_, source, extra in (
        ("grid -> 1 rank", 1, checkpoint(plain_dir, 30), []),
        ("grid -> 1 stage x 4 replicas", 4, checkpoint(plain_dir, 30), []),
        ("1 rank -> 2 stages", 2, checkpoint(one_plain, 30), grid),
        ("grid -> 2 stages x 2 replicas, stages_inner", 4, checkpoint(plain_dir, 30),
         grid + ["parallel.grid_order=stages_inner"])):
    r, d = train("cross_" + name.split()[-1] + str(np_), np_, *plain, *extra, "checkpoint.resume=" + source)
    ok = r.rc == 0 and "resuming from" in r.out
    end = checkpoint_tensors(checkpoint(d), ("model/",)) if ok else {}
    worst = max((float(np.max(np.abs(end[k] - v) / (np.abs(v) + 1e-3))) for k, v in final.items() if k in end),
                default=1.0)
    c.check(f"{name}: resumes and ends within 1e-3 relative of the grid run (worst {worst:.1e})",
            ok and end.keys() == final.keys() and worst < 1e-3, r.text[-2000:])
# A resume with parallel.stage_split auto keeps the checkpoint's split (a balanced split
# would put blocks, and their dropout draws, on other ranks than the generators it restores).
r, split_dir = train("split", 2, *plain, "parallel.pipeline_stages=2", "parallel.stage_split=[2]", "train.epochs=1")
r2, _ = train("split", 2, *plain, "parallel.pipeline_stages=2", "train.epochs=2", "checkpoint.resume=auto")
shown = json.load(open(os.path.join(split_dir, "report.json"))).get("parallel", {}).get("stage_split") if r2.rc == 0 else None
c.check(f"a resume with an auto split keeps the checkpoint's ({shown})",
        r.rc == 0 and r2.rc == 0 and shown == "stem+blocks 0-1 | blocks 2-2+head", r2.text[-1500:])
c.finish()
