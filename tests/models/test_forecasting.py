"""Time series: `hpctrain import timeseries` cuts a CSV series into exactly the windows and
targets docs/data-format.md describes, split in time; `import synthetic` is reproducible;
bad input gets a message naming what is wrong; and each forecasting model (LSTM, BiLSTM,
CNN-BiLSTM, the temporal-fusion-style forecaster), briefly trained on the synthetic server
CPU series, beats the seasonal-naive forecast (the value one day earlier) on the test
windows."""
import json
import os
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, SOURCE, Checks, mpirun, run  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE, "analysis"))
from hpctrain_model import load, predict  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_forecast_")

# --- windowing, exactly --------------------------------------------------------------
csv = os.path.join(work, "series.csv")
steps = 20
with open(csv, "w") as f:
    f.write("time,load,temp\n")
    for t in range(steps):
        f.write(f"2026-01-01T{t:02d},{t * 1.5},{100 + t}\n")
out = os.path.join(work, "series.h5")
r = run([BIN, "import", "timeseries", csv, "--target", "load", "--drop", "time", "--window", "3", "--horizon", "2",
         "--test-fraction", "0.25", "--output", out])
c.check("import timeseries exits 0", r.rc == 0, r.text)
if r.rc == 0:
    with h5py.File(out, "r") as f:
        x_train, y_train = f["/train/features"][:], f["/train/targets"][:]
        x_test, y_test = f["/test/features"][:], f["/test/targets"][:]
        attrs = {k: f.attrs[k] for k in ("window", "horizon", "target_variable", "task")}
        names = [n.decode() if isinstance(n, bytes) else n for n in f["/feature_names"][:]]
    series = np.arange(steps) * 1.5
    # sample i: steps i..i+2 of both variables, target load[i + 3 - 1 + 2]; test targets are
    # the last 25% of the steps (15..19), so samples 11..15 are test and 0..10 train.
    c.check("windows are [variables, steps] with the right values",
            x_train.shape == (11, 2, 3) and np.allclose(x_train[4, 0], series[4:7])
            and np.allclose(x_train[4, 1], [104, 105, 106]), str(x_train.shape))
    c.check("targets lie horizon steps after the window, split in time",
            np.allclose(y_train, series[4:15]) and np.allclose(y_test, series[15:20]) and x_test.shape == (5, 2, 3),
            f"{y_train} {y_test}")
    c.check("attributes and variable names",
            int(attrs["window"]) == 3 and int(attrs["horizon"]) == 2 and int(attrs["target_variable"]) == 0
            and names == ["load", "temp"], str(attrs) + str(names))
r = run([BIN, "inspect", out])
c.check("inspect verifies the series file", r.rc == 0 and r.out.count("sha256 ok") == 4, r.text)
# --span 3: each sample's targets are the 3 steps from the horizon on, [N, 3]; a sample is
# test when its last target is in the test steps (15..19): 14 samples, 9 train and 5 test.
spanned = os.path.join(work, "spanned.h5")
r = run([BIN, "import", "timeseries", csv, "--target", "load", "--drop", "time", "--window", "3", "--horizon", "2",
         "--span", "3", "--test-fraction", "0.25", "--output", spanned])
c.check("import timeseries --span exits 0", r.rc == 0, r.text)
if r.rc == 0:
    with h5py.File(spanned, "r") as f:
        y_train, y_test, span = f["/train/targets"][:], f["/test/targets"][:], int(f.attrs["span"])
    series = np.arange(steps) * 1.5
    c.check("--span 3: targets [N, 3] are the steps horizon .. horizon+2 after the window",
            span == 3 and y_train.shape == (9, 3) and y_test.shape == (5, 3)
            and np.allclose(y_train[4], series[8:11]) and np.allclose(y_test[-1], series[17:20]), f"{y_train} {y_test}")
    r = run([BIN, "inspect", spanned])
    c.check("inspect verifies the spanned file", r.rc == 0 and r.out.count("sha256 ok") == 4, r.text)

# --- bad input --------------------------------------------------------------------------
bad = os.path.join(work, "bad.csv")
with open(bad, "w") as f:
    f.write("load,temp\n1,2\n3,x\n")
r = run([BIN, "import", "timeseries", bad, "--target", "load", "--output", os.path.join(work, "bad.h5")])
c.check("a bad cell: exit 3, names the row and column", r.rc == 3 and "row 3" in r.err and '"temp"' in r.err,
        r.text)
r = run([BIN, "import", "timeseries", csv, "--target", "nope", "--drop", "time", "--output", os.path.join(work, "x.h5")])
c.check("an unknown target column is named", r.rc == 3 and '"nope"' in r.err, r.text)
r = run([BIN, "import", "timeseries", csv, "--target", "load", "--drop", "time", "--window", "30",
         "--output", os.path.join(work, "x.h5")])
c.check("a series too short for the window says so", r.rc == 3 and "each split needs at least 2" in r.err, r.text)
r = run([BIN, "import", "synthetic", "weather", "--output", os.path.join(work, "x.h5")])
c.check("an unknown synthetic series: usage error", r.rc == 2 and "seasonal or cpu" in r.err, r.text)

# --- synthetic series: reproducible -------------------------------------------------------
cpu = os.path.join(work, "cpu.h5")
again = os.path.join(work, "cpu-again.h5")
for path in (cpu, again):
    r = run([BIN, "import", "synthetic", "cpu", "--length", "6000", "--window", "48", "--seed", "1", "--output", path],
            timeout=120)
c.check("import synthetic cpu exits 0", r.rc == 0, r.text)
with h5py.File(cpu, "r") as a, h5py.File(again, "r") as b:
    same = all(np.array_equal(a[k][:], b[k][:]) for k in ("/train/features", "/train/targets", "/test/targets"))
    y = a["/train/targets"][:]
    season = int(a.attrs["season"])
c.check("the same seed gives the same series", same, "")
c.check("CPU allocation in [0, 100] percent with a daily season", y.min() >= 0 and y.max() <= 100 and season == 24,
        f"{y.min()} {y.max()} {season}")

# --- every forecasting model beats seasonal naive -------------------------------------
with h5py.File(cpu, "r") as f:
    x_test, y_test = f["/test/features"][:], f["/test/targets"][:]
    w, h, tv = int(f.attrs["window"]), int(f.attrs["horizon"]), int(f.attrs["target_variable"])
naive = x_test[:, tv, w - 1 + h - season]  # the value one season before the target
naive_mae = float(np.mean(np.abs(naive - y_test)))
print(f"seasonal-naive test MAE {naive_mae:.3f}")
runs = [("forecast_lstm.json", []), ("forecast_lstm.json", ["model.name=bilstm", "model.hidden_size=32"]),
        ("forecast_cnn_bilstm.json", []), ("forecast_tft.json", [])]
for config, extra in runs:
    d = os.path.join(work, config.replace(".json", "") + ("_" + extra[0].split("=")[1] if extra else ""))
    r = mpirun(2, ["train", os.path.join(SOURCE, "configs", config), "data.path=" + cpu, "train.epochs=3",
                   "run.progress=none", "run.dir=" + d] + extra, timeout=900)
    final = json.load(open(os.path.join(d, "report.json")))["final"] if r.rc == 0 else {}
    mae = final.get("test_mae", float("inf"))
    name = json.load(open(os.path.join(d, "config.json")))["model"]["name"] if r.rc == 0 else config
    print(f"{name}: test MAE {mae:.3f}, RMSE {final.get('test_rmse', float('nan')):.3f}")
    c.check(f"{name} beats seasonal naive on test MAE by 10% ({mae:.3f} vs {naive_mae:.3f})",
            mae < 0.9 * naive_mae, r.text[-2000:])
    quantile = config == "forecast_tft.json"
    if quantile:
        # The forecaster predicts the 10%, 50% and 90% quantiles: the pinball loss is reported,
        # and the share of test targets below each level's prediction is near the level.
        coverage = final.get("test_quantile_coverage", [])
        ql = final.get("test_quantile_loss", float("inf"))
        print(f"{name}: quantile loss {ql:.3f}, coverage {coverage}")
        c.check(f"{name}: quantile loss below the median's MAE / 2 ({ql:.3f} vs {mae:.3f})", ql < mae / 2, str(final))
        c.check(f"{name}: the 10/50/90% quantiles cover about 10/50/90% of the test targets ({coverage})",
                len(coverage) == 3 and 0.02 <= coverage[0] <= 0.25 and 0.3 <= coverage[1] <= 0.7
                and 0.75 <= coverage[2] <= 0.98, str(final))
    # Export: `hpctrain predict` and the Python mirror agree on the test windows.
    r = run([BIN, "export", d])
    p = mpirun(2, ["predict", os.path.join(d, "export"), cpu, "--split", "test"], timeout=300)
    if r.rc == 0 and p.rc == 0:
        with h5py.File(os.path.join(d, "export", "predictions_test.h5"), "r") as f:
            ours = f["prediction"][()]
            levels = f["quantile_levels"][()] if "quantile_levels" in f else None
            ours_q = f["quantiles"][()] if "quantiles" in f else None
        model, desc = load(os.path.join(d, "export"))
        theirs = predict(model, desc, x_test).numpy()
        if quantile:
            c.check(f"{name}: predictions hold the three quantiles, median as the prediction",
                    levels is not None and list(levels) == [0.1, 0.5, 0.9] and ours_q.shape == (len(y_test), 3)
                    and np.array_equal(ours_q[:, 1], ours), str(levels))
            diff = float(np.abs(theirs - ours_q).max()) if ours_q is not None else float("inf")
        else:
            diff = float(np.abs(theirs - ours).max())
        pmae = float(np.mean(np.abs(ours - y_test)))
    else:
        diff, pmae = float("inf"), float("inf")
    c.check(f"{name}: export and predict; the Python mirror agrees (max |diff| {diff:.1e}) and the predictions' "
            f"MAE is the run's", diff < 1e-3 and abs(pmae - mae) < 1e-3 * max(1.0, mae), r.text + p.text[-2000:])
# --- a multi-step quantile forecast: 6 steps ahead, 10/50/90% each ----------------------------
cpu6 = os.path.join(work, "cpu-span6.h5")
r = run([BIN, "import", "synthetic", "cpu", "--length", "6000", "--window", "48", "--span", "6", "--seed", "1",
         "--output", cpu6], timeout=120)
c.check("import synthetic cpu --span 6 exits 0", r.rc == 0, r.text)
with h5py.File(cpu6, "r") as f:
    x6, y6 = f["/test/features"][:], f["/test/targets"][:]
steps6 = np.arange(6)
naive6 = x6[:, tv, w - 1 + h + steps6 - season]  # one season before each target step
naive6_mae = float(np.mean(np.abs(naive6 - y6)))
d = os.path.join(work, "forecaster_span6")
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "forecast_tft.json"), "data.path=" + cpu6, "train.epochs=3",
               "run.progress=none", "run.dir=" + d], timeout=900)
final = json.load(open(os.path.join(d, "report.json")))["final"] if r.rc == 0 else {}
mae6, per_step = final.get("test_mae", float("inf")), final.get("test_mae_per_step", [])
print(f"forecaster, 6 steps: test MAE {mae6:.3f} (seasonal naive {naive6_mae:.3f}), per step {per_step}, "
      f"quantile loss {final.get('test_quantile_loss')}, coverage {final.get('test_quantile_coverage')}")
c.check(f"6-step forecaster beats seasonal naive by 10% ({mae6:.3f} vs {naive6_mae:.3f}), MAE per step reported",
        mae6 < 0.9 * naive6_mae and len(per_step) == 6 and abs(np.mean(per_step) - mae6) < 1e-6 * max(1, mae6),
        r.text[-2000:])
cov6 = final.get("test_quantile_coverage", [])
c.check(f"6-step quantiles cover about 10/50/90% ({cov6})",
        len(cov6) == 3 and 0.02 <= cov6[0] <= 0.25 and 0.3 <= cov6[1] <= 0.7 and 0.75 <= cov6[2] <= 0.98, str(final))
r = run([BIN, "export", d])
p = mpirun(2, ["predict", os.path.join(d, "export"), cpu6, "--split", "test"], timeout=300)
if r.rc == 0 and p.rc == 0:
    with h5py.File(os.path.join(d, "export", "predictions_test.h5"), "r") as f:
        ours, ours_q, target6 = f["prediction"][()], f["quantiles"][()], f["target"][()]
    model, desc = load(os.path.join(d, "export"))
    theirs = predict(model, desc, x6).numpy()
    c.check("6-step predictions: [n, 6] targets and predictions, [n, 6, 3] quantiles, the Python mirror agrees",
            ours.shape == (len(y6), 6) and ours_q.shape == (len(y6), 6, 3) and np.array_equal(target6, y6)
            and np.array_equal(ours_q[:, :, 1], ours) and float(np.abs(theirs - ours_q).max()) < 1e-3
            and abs(float(np.mean(np.abs(ours - y6))) - mae6) < 1e-3 * max(1.0, mae6), p.text[-2000:])
else:
    c.check("6-step export and predict exit 0", False, r.text + p.text[-2000:])
# --- cross-validation in time order -------------------------------------------------------
# Series windows get forward-chaining folds (cv.scheme=auto): each held-out block lies after
# its fold's training rows, which stop horizon + span - 1 windows earlier (those windows'
# targets fall inside the block).
d = os.path.join(work, "cv_time")
with h5py.File(cpu6, "r") as f:
    gap = int(f.attrs["horizon"]) + int(f.attrs["span"]) - 1
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "forecast_lstm.json"), "data.path=" + cpu6, "train.epochs=1",
               "data.limit_train=1200", "data.verify_hashes=false", "cv.folds=3", "run.progress=none", "run.dir=" + d], timeout=600)
folds = json.load(open(os.path.join(d, "folds.json"))) if r.rc == 0 else {}
report = json.load(open(os.path.join(d, "cv_report.json"))) if r.rc == 0 else {}
held = [f["held_out"] for f in folds.get("folds", [])]
trained = {row["fold"]: row["train_samples"] for row in report.get("folds_detail", [])}
c.check(f"series cross-validation is time-ordered: 3 later blocks of 300, each fold trains on the rows before "
        f"its block less the gap of {gap}",
        r.rc == 0 and folds["scheme"] == "time" and folds["gap"] == gap and report["scheme"] == "time"
        and [(h[0], len(h)) for h in held] == [(300, 300), (600, 300), (900, 300)]
        and all(h == list(range(h[0], h[0] + len(h))) for h in held)
        and [trained.get(i) for i in range(3)] == [h[0] - gap for h in held],
        json.dumps({k: folds.get(k) for k in ("scheme", "gap", "k")}) + str(trained) + r.text[-2000:])
r = mpirun(1, ["train", os.path.join(SOURCE, "configs", "forecast_lstm.json"), "data.path=" + cpu6, "cv.folds=3",
               "cv.repeats=2", "run.progress=none", "run.dir=" + os.path.join(work, "cv_repeats")], timeout=120)
c.check("repeats of time-ordered folds: a config error naming cv.repeats", r.rc == 2 and "cv.repeats" in r.err,
        r.text[-1500:])
c.finish()
