"""Best model and targets, and a single run's full report: checkpoint.keep_best keeps the
best validation epoch's checkpoint apart from the rolling ones (never pruned, exportable with
`export --best`); early stopping restores the best epoch's weights before the final test;
train.target stops at the epoch that reaches it and records when; a classification run's
report has the catalog's macro, weighted and per-class test metrics and a regression run's
R² and Pearson's r, each equal to scikit-learn's on `hpctrain predict`'s output. Tiny runs
on Fashion-MNIST (2 ranks) and a synthetic series."""
import glob
import json
import os
import sys
import tempfile

import h5py
import numpy as np
from scipy import stats
from sklearn import metrics as skm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, mpirun, read_jsonl, run  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_best_")
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
SMALL = ["data.path=" + FASHION, "data.limit_train=1500", "data.val_fraction=0.2", "data.verify_hashes=false",
         "train.batch_size=100", "model.channels=[4,8]", "model.fc_width=16", "run.progress=none"]


def train(name, extra, np_=2):
    d = os.path.join(work, name)
    r = mpirun(np_, ["train", CONFIG, "run.dir=" + d] + SMALL + extra, timeout=300)
    return d, r


def position(path):
    with h5py.File(path, "r") as f:
        return json.loads(f["position_json"][()].tobytes())


def predictions(run_dir, data, best=False):
    out = os.path.join(run_dir, "export-best" if best else "export")
    r = run([BIN, "export", run_dir, "--output", out] + (["--best"] if best else []))
    assert r.rc == 0, r.text
    r = mpirun(2, ["predict", out, data, "--split", "test"], timeout=300)
    assert r.rc == 0, r.text
    with h5py.File(os.path.join(out, "predictions_test.h5"), "r") as f:
        return {k: f[k][()] for k in f}


# --- checkpoint.keep_best: a catalog metric, apart from the rolling checkpoints ---------------
d, r = train("keep_best", ["train.epochs=4", "checkpoint.keep_best=val_f1_macro", "checkpoint.every_steps=5",
                           "checkpoint.keep=1", "optimizer.lr=0.05"])
c.check("keep_best run exits 0", r.rc == 0, r.text[-3000:])
epochs = [e for e in read_jsonl(os.path.join(d, "metrics.jsonl")) if e.get("type") == "epoch"]
f1 = [e.get("val_f1_macro") for e in epochs]
c.check("epoch lines carry the watched metric val_f1_macro", len(f1) == 4 and all(isinstance(v, float) for v in f1),
        json.dumps(epochs)[:1500])
best_file = os.path.join(d, "checkpoints", "best.h5")
rolling = glob.glob(os.path.join(d, "checkpoints", "step_*.h5"))
c.check("best.h5 is kept beside checkpoint.keep=1 rolling checkpoint", os.path.exists(best_file) and
        len(rolling) == 1, str(os.listdir(os.path.join(d, "checkpoints"))))
if os.path.exists(best_file) and len(f1) == 4:
    best_epoch = int(np.argmax(f1))  # the first of equal values: later ties are no improvement
    c.check(f"best.h5 is the end of epoch {best_epoch}, the best val_f1_macro {f1}",
            position(best_file)["epoch"] == best_epoch + 1 and len(position(best_file)["epochs"]) == best_epoch + 1,
            json.dumps(position(best_file))[:500])
    r = run([BIN, "export", d, "--best", "--output", os.path.join(d, "best-export")])
    c.check("export --best exports best.h5", r.rc == 0 and "best.h5" in r.out, r.text)
    from safetensors.numpy import load_file
    exported = load_file(os.path.join(d, "best-export", "model.safetensors"))
    with h5py.File(best_file, "r") as f:
        stored = {f[k].attrs["name"].decode() if isinstance(f[k].attrs["name"], bytes) else f[k].attrs["name"]:
                  f[k][()] for k in (f"model/parameters/{i}" for i in f["model/parameters"])}
    c.check("its weights are best.h5's", all(np.array_equal(exported[k], v) for k, v in stored.items()), "")
r = run([BIN, "export", os.path.join(work, "nowhere"), "--best"])
c.check("export --best without best.h5: exit 3 naming keep_best", r.rc == 3 and "checkpoint.keep_best" in r.err, r.text)

# --- classification report: the catalog's metrics, equal to scikit-learn's on predict ----------
report = json.load(open(os.path.join(d, "report.json")))
final = report["final"]
p = predictions(d, FASHION)
y, yhat = p["label"], p["prediction"]
ok = True
detail = []
for name, fn in (("balanced_accuracy", skm.balanced_accuracy_score),
                 ("f1_macro", lambda a, b: skm.f1_score(a, b, average="macro")),
                 ("precision_weighted", lambda a, b: skm.precision_score(a, b, average="weighted", zero_division=0)),
                 ("recall_macro", lambda a, b: skm.recall_score(a, b, average="macro"))):
    want = fn(y, yhat)
    got = final.get("test_" + name)
    ok = ok and got is not None and abs(got - want) < 1e-9
    detail.append(f"{name} {got} vs {want}")
per_class = final.get("test_per_class", {})
f1_sk = skm.f1_score(y, yhat, average=None, labels=list(range(10)), zero_division=0)
ok = ok and len(per_class.get("f1", [])) == 10 and np.allclose(per_class["f1"], f1_sk, atol=1e-9, rtol=0)
c.check("classification final: macro, weighted and per-class test metrics equal scikit-learn's", ok, "\n".join(detail))

# --- early stopping restores the best epoch's weights before the test ------------------------
# A min_delta no epoch can beat: epoch 0 is the best, epoch 1 does not improve, patience 1 stops.
# A checkpoint after every step keeps epoch 0's last step, whose weights the test must use.
d, r = train("early", ["train.epochs=4", "train.early_stop_patience=1", "train.early_stop_min_delta=100",
                       "checkpoint.every_steps=1", "checkpoint.keep=100"])
c.check("early-stopping run exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(d, "report.json")))
t = report["training"]
c.check("it stops early after epoch 1 and restores epoch 0", t["stop_reason"] == "early_stopping" and
        t["epochs_run"] == 2 and t["restored_best_epoch"] == 0, json.dumps(t)[:800])


def predictions_of(run_dir, checkpoint, data):
    out = os.path.join(run_dir, "export-" + os.path.basename(checkpoint))
    r = run([BIN, "export", run_dir, "--checkpoint", checkpoint, "--output", out])
    assert r.rc == 0, r.text
    r = mpirun(2, ["predict", out, data, "--split", "test"], timeout=300)
    assert r.rc == 0, r.text
    with h5py.File(os.path.join(out, "predictions_test.h5"), "r") as f:
        return {k: f[k][()] for k in f}


epoch0 = os.path.join(d, "checkpoints", "step_%010d.h5" % (t["steps"] // 2))
best = predictions_of(d, epoch0, FASHION)
last = predictions(d, FASHION)
acc_best = float(np.mean(best["prediction"] == best["label"]))
acc_last = float(np.mean(last["prediction"] == last["label"]))
c.check(f"the final test is epoch 0's model ({acc_best:.4f}), not the last one's ({acc_last:.4f})",
        abs(report["final"]["test_accuracy"] - acc_best) < 1e-12 and not np.array_equal(best["scores"], last["scores"]),
        str(report["final"]["test_accuracy"]))
d, r = train("early_last", ["train.epochs=4", "train.early_stop_patience=1", "train.early_stop_min_delta=100",
                            "train.early_stop_restore_best=false"])
report = json.load(open(os.path.join(d, "report.json")))
c.check("train.early_stop_restore_best=false tests the last epoch's weights",
        r.rc == 0 and report["training"]["restored_best_epoch"] is None and
        abs(report["final"]["test_accuracy"] - acc_last) < 1e-12, r.text[-2000:])

# After a resume the in-memory copy is gone: with checkpoint.keep_best on the early-stopping
# metric, the early stop restores best.h5 (epoch 0 written before the resume, or epoch 1 when
# its val_loss is lower: keep_best counts any improvement, early stopping only min_delta's).
d, r = train("early_resumed", ["train.epochs=1", "train.early_stop_patience=1", "train.early_stop_min_delta=100",
                               "checkpoint.keep_best=val_loss"])
c.check("first part (1 epoch, best.h5 of epoch 0) exits 0", r.rc == 0, r.text[-2000:])
_, r = train("early_resumed", ["train.epochs=4", "train.early_stop_patience=1", "train.early_stop_min_delta=100",
                               "checkpoint.keep_best=val_loss", "checkpoint.resume=auto"])
report = json.load(open(os.path.join(d, "report.json"))) if r.rc == 0 else {"training": {}, "final": {}}
best = predictions(d, FASHION, best=True) if r.rc == 0 else None
best_epoch = position(os.path.join(d, "checkpoints", "best.h5"))["epoch"] - 1 if r.rc == 0 else None
c.check(f"resumed, it stops early after epoch 1 and restores best.h5's epoch ({best_epoch})",
        r.rc == 0 and report["training"]["stop_reason"] == "early_stopping" and report["training"]["epochs_run"] == 2
        and report["training"]["restored_best_epoch"] == best_epoch and
        abs(report["final"]["test_accuracy"] - float(np.mean(best["prediction"] == best["label"]))) < 1e-12,
        r.text[-2000:] + json.dumps(report["training"])[:600])

# --- train.target ----------------------------------------------------------------------------
d, r = train("target", ["train.epochs=5", "train.target=val_accuracy>=0.3", "optimizer.lr=0.05"])
c.check("target run exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(d, "report.json")))
tt = report["training"].get("time_to_target") or {}
accuracies = [e["val_accuracy"] for e in read_jsonl(os.path.join(d, "metrics.jsonl")) if e.get("type") == "epoch"]
first = next((i for i, a in enumerate(accuracies) if a >= 0.3), None)
c.check(f"val_accuracy>=0.3: stops after the first epoch that reaches it ({first}: {accuracies})",
        first is not None and report["training"]["stop_reason"] == "target" and len(accuracies) == first + 1 and
        report["training"]["epochs_run"] == first + 1 and tt.get("reached") is True and tt.get("epoch") == first and
        tt.get("value") == accuracies[first], json.dumps(report["training"])[:1000])
c.check("time_to_target records the step and the times", tt.get("step") == report["training"]["steps"] > 0 and
        0 < tt.get("train_seconds", 0) <= tt.get("wall_seconds", 0) and tt.get("target") == "val_accuracy>=0.3",
        json.dumps(tt))
d, r = train("unreached", ["train.epochs=2", "train.target=val_loss<0"])
report = json.load(open(os.path.join(d, "report.json"))) if r.rc == 0 else {}
c.check("an unreached target runs every epoch and says so", r.rc == 0 and
        report["training"]["stop_reason"] == "completed" and
        report["training"]["time_to_target"] == {"target": "val_loss<0", "reached": False}, r.text[-2000:])
for bad, words in (("train.target=val_accuracy=0.9", "train.target"),
                   ("train.target=test_accuracy>=0.9", "test_every_epoch"),
                   ("train.target=val_r2>=0.9", "not a metric of classification"),
                   ("checkpoint.keep_best=val_nothing", "unknown metric"),
                   ("checkpoint.keep_best=test_accuracy", "validation"),
                   ("train.target=val_accuracy>=0.5 cv.folds=2", "held-out fold")):
    _, r = train("bad", ["train.epochs=1"] + bad.split(), np_=1)
    c.check(f"{bad}: exit 2 naming it", r.rc == 2 and words in r.err, r.text[-1500:])

# --- regression report: R² and Pearson's r equal scikit-learn's and scipy's on predict ---------
series = os.path.join(work, "cpu.h5")
r = run([BIN, "import", "synthetic", "cpu", "--length", "1500", "--window", "24", "--seed", "2", "--output", series])
c.check("import synthetic cpu", r.rc == 0, r.text)
d = os.path.join(work, "regression")
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "forecast_lstm.json"), "data.path=" + series, "train.epochs=2",
               "model.hidden_size=8", "train.batch_size=64", "run.progress=none", "run.dir=" + d,
               "checkpoint.keep_best=val_r2"], timeout=300)
c.check("regression run with keep_best=val_r2 exits 0", r.rc == 0, r.text[-3000:])
final = json.load(open(os.path.join(d, "report.json")))["final"]
p = predictions(d, series)
r2 = skm.r2_score(p["target"], p["prediction"])
pearson = stats.pearsonr(p["target"], p["prediction"]).statistic
c.check(f"test_r2 {final.get('test_r2')} equals scikit-learn's {r2}", abs(final.get("test_r2", 9) - r2) < 1e-6, "")
c.check(f"test_pearson {final.get('test_pearson')} equals scipy's {pearson}",
        abs(final.get("test_pearson", 9) - pearson) < 1e-6, "")
test_line = [e for e in read_jsonl(os.path.join(d, "metrics.jsonl")) if e.get("type") == "test"]
c.check("metrics.jsonl's test line has r2 and pearson as report.json", len(test_line) == 1 and
        test_line[0].get("r2") == final.get("test_r2") and test_line[0].get("pearson") == final.get("test_pearson"),
        json.dumps(test_line))
c.check("best.h5 for val_r2", os.path.exists(os.path.join(d, "checkpoints", "best.h5")), "")
c.finish()
