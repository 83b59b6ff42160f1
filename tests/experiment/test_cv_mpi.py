"""Cross-validation over rank groups: 5 stratified folds on 4 ranks, in groups of 2 and
of 1. Checks the fold invariants on folds.json, that every metric in cv_report.json
equals scikit-learn's recomputed from the saved predictions, the summary statistics,
and that the fold assignment does not depend on the group layout."""
import csv
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats
from sklearn import metrics as skm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE, "analysis"))
from verify_cv_report import recompute  # noqa: E402

import h5py  # noqa: E402

c = Checks()
N = 3000
labels = h5py.File(FASHION, "r")["/train/labels"][:N]
common = ["data.path=" + FASHION, "data.limit_train=%d" % N, "data.verify_hashes=false", "model.channels=[8]",
          "model.fc_width=32", "train.epochs=1", "train.batch_size=64", "cv.folds=5", "run.progress=none"]


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(b))


def check_run(tag, ranks_per_group):
    run_dir = tempfile.mkdtemp(prefix="hpctrain_cv_%s_" % tag)
    r = mpirun(4, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_cnn_cv.json"), *common,
                   "cv.ranks_per_group=%d" % ranks_per_group, "run.dir=" + run_dir], timeout=900)
    c.check(f"[{tag}] cv run exits 0", r.rc == 0, r.text[-3000:])
    if r.rc != 0:
        return None
    report = json.load(open(os.path.join(run_dir, "cv_report.json")))
    folds = json.load(open(os.path.join(run_dir, "folds.json")))
    held = [np.array(f["held_out"]) for f in folds["folds"]]
    allidx = np.concatenate(held)
    c.check(f"[{tag}] folds disjoint and covering", len(allidx) == N and len(np.unique(allidx)) == N, "")
    per_class = np.array([np.bincount(labels[h], minlength=10) for h in held])
    c.check(f"[{tag}] stratified: class counts differ by <= 1 between folds",
            (per_class.max(0) - per_class.min(0)).max() <= 1, str(per_class))
    c.check(f"[{tag}] groups", report["groups"] == 4 // ranks_per_group and report["ranks_per_group"] == ranks_per_group,
            json.dumps({k: report[k] for k in ("groups", "ranks_per_group")}))
    rows = report["folds_detail"]
    c.check(f"[{tag}] 5 folds ok", len(rows) == 5 and all(f["status"] == "ok" for f in rows), "")
    used = sorted({f["group"] for f in rows})
    c.check(f"[{tag}] every group trained a fold", used == list(range(4 // ranks_per_group)), str(used))
    per_fold = {}
    for f in rows:
        name = "repeat%d_fold%d" % (f["repeat"], f["fold"])
        with open(os.path.join(run_dir, "predictions", name + ".csv")) as fh:
            table = list(csv.DictReader(fh))
        idx = np.array([int(t["index"]) for t in table])
        y = np.array([int(t["label"]) for t in table])
        pred = np.array([int(t["prediction"]) for t in table])
        scores = np.array([[float(t["score_%d" % k]) for k in range(10)] for t in table])
        c.check(f"[{tag}] {name}: predictions cover the held-out fold with the file's labels",
                np.array_equal(idx, held[f["fold"]]) and np.array_equal(y, labels[idx]), "")
        c.check(f"[{tag}] {name}: prediction = argmax of scores", np.array_equal(pred, scores.argmax(1)), "")
        # The same recomputation users run (analysis/verify_cv_report.py), from the file.
        want = recompute(os.path.join(run_dir, "predictions", name + ".csv"), True, 10)
        got = f["metrics"]
        bad = {k: (got.get(k), v) for k, v in want.items() if not close(got.get(k), v)}
        c.check(f"[{tag}] {name}: metrics equal scikit-learn's", not bad, str(bad))
        ll = skm.log_loss(y, scores, labels=list(range(10)))
        c.check(f"[{tag}] {name}: loss equals sklearn log_loss", close(got["loss"], ll, 1e-6), f"{got['loss']} {ll}")
        cm = skm.confusion_matrix(y, pred, labels=list(range(10)))
        c.check(f"[{tag}] {name}: confusion matrix", np.array_equal(np.array(f["confusion"]), cm), "")
        per_fold[name] = want
    # Summary: mean, sample std, 95% t interval.
    for metric in ("accuracy", "f1_macro", "loss"):
        v = np.array([m[metric] for m in per_fold.values()])
        s = report["summary"][metric]
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=v.std(ddof=1) / math.sqrt(len(v)))
        ok = close(s["mean"], v.mean()) and close(s["std"], v.std(ddof=1)) and close(s["ci95"][0], lo, 1e-7) \
            and close(s["ci95"][1], hi, 1e-7)
        c.check(f"[{tag}] summary of {metric}: mean, std, 95% CI", ok, json.dumps(s) + f" {v.mean()} {lo} {hi}")
    for name in ("cv_folds.csv", "cv_summary.md", "config.json"):
        c.check(f"[{tag}] {name} written", os.path.getsize(os.path.join(run_dir, name)) > 0, "")
    p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "plot_cv.py"), run_dir],
                       capture_output=True, text=True)
    c.check(f"[{tag}] plot_cv draws the fold plots", p.returncode == 0 and all(
        os.path.getsize(os.path.join(run_dir, "analysis", n)) > 1000 for n in ("fold_metrics.png", "fold_curves.png")),
        p.stdout + p.stderr)
    p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "verify_cv_report.py"), run_dir],
                       capture_output=True, text=True)
    c.check(f"[{tag}] verify_cv_report agrees", p.returncode == 0 and "all metrics agree" in p.stdout,
            p.stdout + p.stderr)
    return folds


a = check_run("groups-of-2", 2)
b = check_run("groups-of-1", 1)
if a and b:
    c.check("fold assignment independent of the group layout", a["folds"] == b["folds"], "")
c.finish()
