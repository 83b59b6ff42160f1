"""Tabular regression end to end: scikit-learn's diabetes table as CSV, `hpctrain import
csv`, an MLP trained with MSE on 2 ranks that beats the mean predictor on test, a 3-fold
cross-validation whose regression metrics equal scikit-learn's recomputed from the saved
predictions, Huber and MAE losses, a classification CSV, and bad cells named by row and
column."""
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
from hpctest import BIN, SOURCE, Checks, mpirun, run  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_csv_")
table = os.path.join(work, "diabetes.csv")
subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "export_diabetes_csv.py"), table], check=True)
h5 = os.path.join(work, "diabetes.h5")
r = run([BIN, "import", "csv", table, "--label", "progression", "--output", h5])
c.check("import csv exits 0", r.rc == 0, r.text)
c.check("import reports the split", "354 train and 88 test" in r.out, r.out)
r = run([BIN, "inspect", h5])
c.check("inspect shows a regression table", r.rc == 0 and "regression" in r.out and "features" in r.out, r.text)

cfg = os.path.join(SOURCE, "configs", "diabetes_mlp.json")
run_dir = os.path.join(work, "train")
r = mpirun(2, ["train", cfg, "data.path=" + h5, "run.dir=" + run_dir, "run.progress=none"], timeout=600)
c.check("regression training exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(run_dir, "report.json")))
import h5py  # noqa: E402

with h5py.File(h5, "r") as f:
    y_train = f["/train/targets"][:]
    y_test = f["/test/targets"][:]
baseline = math.sqrt(np.mean((y_test - y_train.mean()) ** 2))
rmse = report["final"]["test_rmse"]
print(f"test rmse {rmse:.2f}, mean predictor {baseline:.2f}")
c.check("MLP beats the mean predictor on test by 15%", rmse < 0.85 * baseline, f"{rmse} vs {baseline}")
c.check("report names the task", report["data"]["task"] == "regression", json.dumps(report["data"])[:400])

for loss in ("huber", "mae"):
    d = os.path.join(work, loss)
    r = mpirun(2, ["train", cfg, "data.path=" + h5, "run.dir=" + d, "train.loss=" + loss, "train.epochs=5",
                   "run.progress=none"], timeout=300)
    c.check(f"train.loss={loss} runs", r.rc == 0 and json.load(open(os.path.join(d, "report.json")))["final"]["test_mae"] > 0,
            r.text[-2000:])
r = mpirun(1, ["train", cfg, "data.path=" + h5, "run.dir=" + os.path.join(work, "x"), "train.loss=cross_entropy"])
c.check("cross_entropy on regression data is a config error", r.rc == 2 and "train.loss" in r.err, r.text)

# 3-fold CV: metrics recomputed with scikit-learn from the saved predictions.
cv_dir = os.path.join(work, "cv")
r = mpirun(2, ["train", cfg, "data.path=" + h5, "run.dir=" + cv_dir, "cv.folds=3", "train.epochs=20",
               "run.progress=none"], timeout=600)
c.check("regression cross-validation exits 0", r.rc == 0, r.text[-3000:])
rep = json.load(open(os.path.join(cv_dir, "cv_report.json")))
c.check("plain folds for regression", rep["stratified"] is False and len(rep["folds_detail"]) == 3, "")
vals = []
for f in rep["folds_detail"]:
    rows = list(csv.DictReader(open(os.path.join(cv_dir, "predictions", "repeat0_fold%d.csv" % f["fold"]))))
    y = np.array([float(x["target"]) for x in rows])
    p = np.array([float(x["prediction"]) for x in rows])
    want = {"mse": skm.mean_squared_error(y, p), "rmse": skm.root_mean_squared_error(y, p),
            "mae": skm.mean_absolute_error(y, p), "r2": skm.r2_score(y, p), "pearson": stats.pearsonr(y, p)[0]}
    got = f["metrics"]
    bad = {k: (got[k], v) for k, v in want.items() if abs(got[k] - v) > 1e-9 * max(1, abs(v))}
    c.check(f"fold {f['fold']}: regression metrics equal scikit-learn's", not bad, str(bad))
    c.check(f"fold {f['fold']}: targets are the file's", np.allclose(y, y_train[[int(x["index"]) for x in rows]]), "")
    vals.append(want["rmse"])
s = rep["summary"]["rmse"]
c.check("rmse summary", abs(s["mean"] - np.mean(vals)) < 1e-9 and abs(s["std"] - np.std(vals, ddof=1)) < 1e-9, json.dumps(s))

# Classification from a CSV with class names.
cls = os.path.join(work, "cls.csv")
rng = np.random.default_rng(0)
with open(cls, "w") as f:
    f.write("x1,x2,kind\n")
    for i in range(400):
        a, b = rng.normal(size=2)
        f.write(f"{a:.6f},{b:.6f},{'upper' if a + b > 0 else 'lower'}\n")
cls_h5 = os.path.join(work, "cls.h5")
r = run([BIN, "import", "csv", cls, "--label", "kind", "--task", "classification", "--output", cls_h5])
c.check("classification CSV imports", r.rc == 0, r.text)
d = os.path.join(work, "cls_run")
r = mpirun(2, ["train", cfg, "data.path=" + cls_h5, "run.dir=" + d, "train.loss=auto", "train.epochs=10",
               "run.progress=none"], timeout=300)
acc = json.load(open(os.path.join(d, "report.json")))["final"]["test_accuracy"] if r.rc == 0 else 0
c.check("a linearly separable CSV is learned (>= 90% test accuracy)", acc >= 0.9, r.text[-2000:] + str(acc))

# A trial whose loss overflows is reported as failed; the other trial completes.
huge = os.path.join(work, "huge.csv")
with open(huge, "w") as f:
    f.write("x,y\n")
    for i in range(200):
        f.write(f"{i / 200:.4f},{(1 + i / 200) * 1e20:.6e}\n")
huge_h5 = os.path.join(work, "huge.h5")
r = run([BIN, "import", "csv", huge, "--label", "y", "--output", huge_h5])
c.check("huge-target CSV imports", r.rc == 0, r.text)
d = os.path.join(work, "diverge")
r = mpirun(2, ["train", cfg, "data.path=" + huge_h5, "run.dir=" + d, "train.epochs=2", "cv.folds=2",
               "search.method=grid", 'search.space={"data.normalize_targets": [true, false]}', "run.progress=none"],
           timeout=300)
c.check("search with a diverging trial exits 0", r.rc == 0, r.text[-2000:])
rep = json.load(open(os.path.join(d, "search_report.json")))
by = {json.dumps(b["parameters"]): b for b in rep["leaderboard"]}
bad_trial = by['{"data.normalize_targets": false}']
good_trial = by['{"data.normalize_targets": true}']
errors = [t["error"] for t in rep["tasks"] if t["status"] == "failed"]
# train.nonfinite=abort (the default) stops a fold at its first non-finite step; a loss that
# overflows only in the logged average is still "training diverged".
c.check("the unstandardized trial fails as non-finite, the other completes",
        bad_trial["folds_failed"] == 2 and good_trial["folds_ok"] == 2 and rep["leaderboard"][0] is good_trial
        and len(errors) == 2 and all("train.nonfinite=abort" in e or "training diverged" in e for e in errors),
        json.dumps(rep["leaderboard"])[:1500] + "\n" + json.dumps(errors)[:800])
c.check("regression search ranks by rmse", rep["metric"] == "rmse" and rep["lower_is_better"] is True, "")

# Bad cells are named by row and column.
bad = os.path.join(work, "bad.csv")
with open(table) as f:
    lines = f.read().splitlines()
cells = lines[3].split(",")
cells[2] = "abc"
lines[3] = ",".join(cells)
open(bad, "w").write("\n".join(lines) + "\n")
r = run([BIN, "import", "csv", bad, "--label", "progression", "--output", os.path.join(work, "bad.h5")])
column = lines[0].split(",")[2]
c.check("a bad cell names its row and column", r.rc == 3 and "row 4" in r.err and column in r.err and "abc" in r.err,
        r.text)
c.check("nothing written for a bad CSV", not os.path.exists(os.path.join(work, "bad.h5")), "")
r = run([BIN, "import", "csv", table, "--label", "nope", "--output", os.path.join(work, "nope.h5")])
c.check("a missing label column lists the columns", r.rc == 3 and "nope" in r.err and "progression" in r.err, r.text)
c.finish()
