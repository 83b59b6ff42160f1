"""Pipeline stages and microbatches in whole training runs: the loss of every logged step
over 50 steps agrees within 1e-4 relative on 1 rank, on 2 stages (1F1B), on 2 stages x 2
replicas (interleaved) and with gradient accumulation on 1 rank (an MLP without dropout or
batch norm); the final figures are the same quantities. Cross-validation groups of 2 stages
and of 2 stages x 2 replicas score each fold as 1-rank groups do. Bad pipeline settings end
every rank with one message naming the key, quickly."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json")
work = tempfile.mkdtemp(prefix="hpctrain_pipeline_")
common = ["data.path=" + FASHION, "data.verify_hashes=false", "data.limit_train=4000", "run.progress=none",
          "model.dropout=0", "model.batch_norm=false", "model.hidden=[64,48,32,32]", "train.epochs=1",
          "train.max_steps=50", "train.batch_size=64", "run.log_every=5", "checkpoint.at_end=false",
          "train.early_stop_patience=0", "run.threads=1"]


def train(name, np, *extra):
    run_dir = os.path.join(work, name)
    r = mpirun(np, ["train", CONFIG, *common, "run.dir=" + run_dir, *extra], timeout=300)
    if r.rc != 0:
        return r, [], {}
    lines = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = [x["loss"] for x in lines if x.get("type") == "step"]
    return r, steps, json.load(open(os.path.join(run_dir, "report.json")))


r1, one, rep1 = train("one", 1)
c.check("one rank trains 50 steps", r1.rc == 0 and len(one) == 10, r1.text[-1500:])
layouts = [("two_stages_1f1b", 2, ["parallel.pipeline_stages=2", "parallel.microbatches=4"]),
           ("grid_2x2_interleaved", 4, ["parallel.pipeline_stages=2", "parallel.microbatches=4",
                                        "parallel.schedule=interleaved"]),
           ("two_stages_gpipe", 2, ["parallel.pipeline_stages=2", "parallel.microbatches=8",
                                    "parallel.schedule=gpipe", "parallel.stage_split=[1]"]),
           ("accumulation", 1, ["parallel.microbatches=4"])]
for name, np, extra in layouts:
    r, steps, rep = train(name, np, *extra)
    worst = max((abs(a - b) / abs(b) for a, b in zip(steps, one)), default=1.0)
    c.check(f"{name}: the loss of every logged step equals one rank's within 1e-4 relative "
            f"(worst {worst:.2e})", r.rc == 0 and len(steps) == len(one) and worst < 1e-4, r.text[-1500:])
    par = rep.get("parallel", {})
    if par.get("pipeline_stages", 1) > 1:
        # Common windows: settled every 16 steps (48 of 50), one window per replica shared by
        # its stages, each rank's idle share of it within [0, 1).
        replicas = par["data_parallel_replicas"]
        win = par.get("window_seconds", [])
        same = all(win[r] == win[r % replicas] for r in range(len(win)))
        idle = par.get("window_idle_share", [])
        c.check(f"{name}: the common windows cover 48 settled steps, equal on a replica's stages, idle shares "
                f"{[round(x, 3) for x in idle]}",
                par.get("window_steps") == [48] * np and same and all(0 <= x < 1 for x in idle) and
                abs(par["bubble_common_window"] - sum(idle) / len(idle)) < 1e-12 and
                0 <= par["entry_skew_share"] < 1, json.dumps(par)[:1500])
    a = rep.get("final", {}).get("test_accuracy", -1)
    b = rep1.get("final", {}).get("test_accuracy", -2)
    c.check(f"{name}: test accuracy is the same quantity ({a} vs {b})", abs(a - b) < 1e-3, json.dumps(rep.get("final")))


# Cross-validation groups are grids too: 2 folds on 4 ranks in groups of 2 stages x 1 replica
# and of 2 stages x 2 replicas score every fold as groups of 1 rank do.
cv_common = [c_ for c_ in common if not c_.startswith(("train.max_steps", "run.log_every"))] + [
    "cv.folds=2", "train.max_steps=30", "data.limit_train=2000"]


def cv(name, *extra):
    run_dir = os.path.join(work, name)
    r = mpirun(4, ["train", CONFIG, *cv_common, "run.dir=" + run_dir, *extra], timeout=300)
    rows = json.load(open(os.path.join(run_dir, "cv_report.json")))["folds_detail"] if r.rc == 0 else []
    return r, {f["fold"]: f["metrics"] for f in rows if f["status"] == "ok"}


r0, plain_folds = cv("cv_plain", "cv.ranks_per_group=1")
c.check("cv in groups of 1 rank scores 2 folds", r0.rc == 0 and len(plain_folds) == 2, r0.text[-1500:])
for name, extra in (("cv groups of 2 stages", ["cv.ranks_per_group=2", "parallel.pipeline_stages=2",
                                               "parallel.microbatches=4"]),
                    ("cv groups of 2 stages x 2 replicas", ["cv.ranks_per_group=4", "parallel.pipeline_stages=2",
                                                            "parallel.microbatches=2"])):
    r, folds = cv(name.replace(" ", "_"), *extra)
    worst = max((abs(folds[k]["loss"] - v["loss"]) / v["loss"] for k, v in plain_folds.items() if k in folds),
                default=1.0)
    same_acc = all(k in folds and abs(folds[k]["accuracy"] - v["accuracy"]) <= 2e-3 for k, v in plain_folds.items())
    c.check(f"{name}: every fold's held-out loss within 1e-4 relative of 1-rank groups' (worst {worst:.1e}), "
            f"accuracy within 2e-3", r.rc == 0 and len(folds) == 2 and worst < 1e-4 and same_acc, r.text[-1500:])


def refused(what, np, key, *extra):
    r = mpirun(np, ["train", CONFIG, *common, "run.dir=" + os.path.join(work, "bad"), *extra], timeout=60)
    c.check(f"{what}: exit 2 with one message naming {key}",
            r.rc == 2 and key in r.err and r.err.count("hpctrain: error") == 1, r.text[-1500:])


refused("stages that do not divide the ranks", 2, "parallel.pipeline_stages", "parallel.pipeline_stages=3")
refused("more stages than blocks", 2, "parallel.pipeline_stages", "parallel.pipeline_stages=2",
        "model.hidden=[32]")
refused("microbatches that do not divide the per-replica batch", 2, "parallel.microbatches",
        "parallel.pipeline_stages=2", "parallel.microbatches=5")
refused("interleaved with microbatches not a multiple of the stages", 2, "parallel.microbatches",
        "parallel.pipeline_stages=2", "parallel.microbatches=3", "parallel.schedule=interleaved")
refused("a stage split out of range", 2, "parallel.stage_split", "parallel.pipeline_stages=2",
        "parallel.stage_split=[9]")
refused("NCCL between the stages of a CPU run", 2, "parallel.p2p", "parallel.pipeline_stages=2",
        "parallel.p2p=nccl")
refused("cv groups that pipeline stages do not divide", 4, "cv.ranks_per_group", "cv.folds=2",
        "cv.ranks_per_group=1", "parallel.pipeline_stages=2")
c.finish()
