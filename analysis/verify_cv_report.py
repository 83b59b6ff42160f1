"""Recomputes every fold metric of a cross-validation run from its saved predictions with
scikit-learn and compares them with rank 0's cv_report.json.

Usage: python analysis/verify_cv_report.py RUN_DIR [--tolerance 1e-9]
Exit code 0 when every metric agrees, 1 otherwise. Prints one line per fold."""
import argparse
import csv
import json
import os
import sys

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def recompute(path, classification, num_classes):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if classification:
        y = np.array([int(r["label"]) for r in rows])
        pred = np.array([int(r["prediction"]) for r in rows])
        scores = np.array([[float(r["score_%d" % k]) for k in range(num_classes)] for r in rows])
        return {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "precision_macro": skm.precision_score(y, pred, average="macro", zero_division=0),
            "recall_macro": skm.recall_score(y, pred, average="macro", zero_division=0),
            "f1_macro": skm.f1_score(y, pred, average="macro", zero_division=0),
            "precision_weighted": skm.precision_score(y, pred, average="weighted", zero_division=0),
            "recall_weighted": skm.recall_score(y, pred, average="weighted", zero_division=0),
            "f1_weighted": skm.f1_score(y, pred, average="weighted", zero_division=0),
            "loss": float(np.mean(-np.log(scores[np.arange(len(y)), y]))),
        }
    y = np.array([float(r["target"]) for r in rows])
    p = np.array([float(r["prediction"]) for r in rows])
    return {"mse": skm.mean_squared_error(y, p), "rmse": skm.root_mean_squared_error(y, p),
            "mae": skm.mean_absolute_error(y, p), "r2": skm.r2_score(y, p), "pearson": stats.pearsonr(y, p)[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tolerance", type=float, default=1e-9)
    a = ap.parse_args()
    report = json.load(open(os.path.join(a.run_dir, "cv_report.json")))
    classification = report["task"] == "classification"
    ok = True
    values = {}
    for fold in report["folds_detail"]:
        if fold["status"] != "ok":
            print(f"fold {fold['repeat']}/{fold['fold']}: failed: {fold['error']}")
            continue
        k = len(fold["metrics"]["per_class"]["support"]) if classification else 0
        name = "repeat%d_fold%d" % (fold["repeat"], fold["fold"])
        want = recompute(os.path.join(a.run_dir, "predictions", name + ".csv"), classification, k)
        worst = max(abs(fold["metrics"][m] - v) / max(1.0, abs(v)) for m, v in want.items())
        good = worst <= a.tolerance
        ok &= good
        for m, v in want.items():
            values.setdefault(m, []).append(v)
        print(f"{name}: {len(want)} metrics, largest relative difference {worst:.2e} {'ok' if good else 'MISMATCH'}")
    for m, v in values.items():
        v = np.array(v)
        s = report["summary"][m]
        if len(v) > 1:
            lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(len(v)))
            diff = max(abs(s["mean"] - v.mean()), abs(s["std"] - v.std(ddof=1)), abs(s["ci95"][0] - lo),
                       abs(s["ci95"][1] - hi))
            good = diff <= a.tolerance * max(1.0, abs(v.mean())) * 100
            ok &= good
            print(f"summary {m}: mean {v.mean():.6f} std {v.std(ddof=1):.6f} 95% CI [{lo:.6f}, {hi:.6f}] "
                  f"{'ok' if good else 'MISMATCH'}")
    print("all metrics agree with scikit-learn" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
