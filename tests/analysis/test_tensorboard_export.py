"""analysis/tensorboard_export.py on a real run, a cross-validation and a search made here
with the built binary on the test data: TensorBoard's EventAccumulator reads back the
scalars, equal (as 32-bit floats) to metrics.jsonl, cv_report.json and search_report.json;
exporting again replaces the files.
Skips (77) without the tensorboard package."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun, read_jsonl  # noqa: E402

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:
    print("tensorboard not installed (scripts/requirements.txt): skipped")
    sys.exit(77)

c = Checks()
tmp = tempfile.mkdtemp(prefix="hpctrain_tb_")
runs = os.path.join(tmp, "runs")
QUICK = ["data.path=" + FASHION, "data.verify_hashes=false", "data.limit_train=512", "train.epochs=2",
         "run.progress=none"]


def scalars(logdir):
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))  # TensorBoard keeps 32-bit floats


def same(got, want):
    return len(got) == len(want) and all(gs == ws and close(gv, wv) for (gs, gv), (ws, wv) in zip(got, want))


def export():
    p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "tensorboard_export.py"), runs],
                       capture_output=True, text=True, timeout=300)
    c.check("tensorboard_export exits 0", p.returncode == 0, p.stdout + p.stderr)


r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json"),
               "run.dir=" + os.path.join(runs, "run"), "run.log_every=2"] + QUICK, timeout=300)
c.check("the run finishes", r.rc == 0, r.text[-3000:])
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_cnn_cv.json"),
               "run.dir=" + os.path.join(runs, "cv"), "cv.folds=2", "cv.final_retrain=false"] + QUICK, timeout=300)
c.check("the cross-validation finishes", r.rc == 0, r.text[-3000:])
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_search.json"),
               "run.dir=" + os.path.join(runs, "search"), "cv.folds=2", "cv.final_retrain=false", "train.epochs=1"]
           + QUICK[:3] + QUICK[4:], timeout=600)
c.check("the search finishes", r.rc == 0, r.text[-3000:])
export()
tb = os.path.join(runs, "tensorboard")

lines = read_jsonl(os.path.join(runs, "run", "metrics.jsonl"))
got = scalars(os.path.join(tb, "run"))
steps = [x for x in lines if x["type"] == "step"]
epochs = [x for x in lines if x["type"] == "epoch"]
test = [x for x in lines if x["type"] == "test"]
c.check("the run has step, epoch and test lines to compare", len(steps) >= 2 and len(epochs) == 2 and len(test) == 1)
for key in ("loss", "lr", "samples_per_s"):
    want = [(s["step"], s[key]) for s in steps]
    c.check(f"train/{key} equals metrics.jsonl's step lines", same(got.get(f"train/{key}", []), want),
            f"{got.get(f'train/{key}')} vs {want}")
for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_s", "lr"):
    want = [(e["epoch"] + 1, e[key]) for e in epochs]
    c.check(f"epoch/{key} equals metrics.jsonl's epoch lines", same(got.get(f"epoch/{key}", []), want),
            f"{got.get(f'epoch/{key}')} vs {want}")
if test:
    c.check("test/accuracy equals the test line at the last step",
            same(got.get("test/accuracy", []), [(steps[-1]["step"], test[0]["accuracy"])]),
            str(got.get("test/accuracy")))

report = json.load(open(os.path.join(runs, "cv", "cv_report.json")))
for fold in report["folds_detail"]:
    name = f"repeat{fold['repeat']}_fold{fold['fold']}"
    got = scalars(os.path.join(tb, "cv", name))
    c.check(f"cv {name}: fold/accuracy and fold/f1_macro equal cv_report.json",
            same(got.get("fold/accuracy", []), [(0, fold["metrics"]["accuracy"])]) and
            same(got.get("fold/f1_macro", []), [(0, fold["metrics"]["f1_macro"])]), str(got.get("fold/accuracy")))
    c.check(f"cv {name}: epoch/train_loss per epoch", same(got.get("epoch/train_loss", []), [
        (e["epoch"] + 1, e["train_loss"]) for e in fold["epoch_records"]]), str(got.get("epoch/train_loss")))
got = scalars(os.path.join(tb, "cv", "summary"))
c.check("cv summary: cv/accuracy/mean and std equal cv_report.json",
        same(got.get("cv/accuracy/mean", []), [(0, report["summary"]["accuracy"]["mean"])]) and
        same(got.get("cv/accuracy/std", []), [(0, report["summary"]["accuracy"]["std"])]), str(got))

search = json.load(open(os.path.join(runs, "search", "search_report.json")))
for b in search["leaderboard"]:
    got = scalars(os.path.join(tb, "search", f"trial{b['trial']}"))
    c.check(f"search trial {b['trial']}: trial/rank and trial/accuracy/mean equal the leaderboard",
            same(got.get("trial/rank", []), [(0, b["rank"])]) and
            same(got.get("trial/accuracy/mean", []), [(0, b["summary"]["accuracy"]["mean"])]), str(got)[:500])
task = next(t for t in search["tasks"] if t["status"] == "ok")
got = scalars(os.path.join(tb, "search", f"trial{task['trial']}", f"repeat{task['repeat']}_fold{task['fold']}"))
c.check("a search task's fold/accuracy equals its outcome",
        same(got.get("fold/accuracy", []), [(0, task["metrics"]["accuracy"])]), str(got.get("fold/accuracy")))

# Exporting again replaces the event files: one value per step, not two.
export()
got = scalars(os.path.join(tb, "run"))
c.check("a second export replaces the first", same(got.get("train/loss", []), [(s["step"], s["loss"]) for s in steps]),
        str(got.get("train/loss")))

p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "tensorboard_export.py"),
                    os.path.join(tmp, "runs", "tensorboard")], capture_output=True, text=True, timeout=120)
c.check("a folder without runs is refused", p.returncode != 0 and "no run, cross-validation or search" in p.stderr,
        p.stderr)

if c.failed == []:
    shutil.rmtree(tmp, ignore_errors=True)
c.finish()
