"""Plots of a cross-validation or search run directory (docs/cv-and-search.md).

    python analysis/plot_cv.py RUN_DIR [--out DIR]

Cross-validation (cv_report.json): fold_metrics.png, the per-fold value of each metric as
points with the mean and its 95% confidence interval; fold_curves.png, each fold's training
and held-out loss per epoch. Search (search_report.json): leaderboard.png, the ranked
trials' mean ± standard deviation of the search metric. Writes into --out (default
RUN_DIR/analysis)."""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")
REGRESSION = ("rmse", "mae", "r2", "pearson")


def plot_folds(report, out):
    folds = [f for f in report["folds_detail"] if f["status"] == "ok"]
    metrics = CLASSIFICATION if report["task"] == "classification" else REGRESSION
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(2.6 * (len(metrics) + 1), 3.6))
    for ax, m in zip(axes, metrics + ("loss",)):
        values = [f["metrics"][m] for f in folds if f["metrics"].get(m) is not None]
        ax.plot([0] * len(values), values, "o", alpha=0.7)
        s = report["summary"].get(m)
        if s and s["mean"] is not None:
            ax.axhline(s["mean"], color="k", lw=1)
            if s["ci95"][0] is not None:
                ax.axhspan(s["ci95"][0], s["ci95"][1], color="k", alpha=0.1)
        ax.set_xticks([])
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(folds)} folds: values, mean and 95% CI", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fold_metrics.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for f in folds:
        epochs = f["epoch_records"]
        x = [e["epoch"] + 1 for e in epochs]
        label = f"repeat {f['repeat']} fold {f['fold']}"
        line = ax.plot(x, [e["train_loss"] for e in epochs], "-", marker="o", label=label + " train")[0]
        if epochs and "val_loss" in epochs[0]:
            ax.plot(x, [e["val_loss"] for e in epochs], "--", marker="o", color=line.get_color(),
                    label=label + " held out")
    ax.set(xlabel="epoch", ylabel="loss", title="per-fold learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fold_curves.png"), dpi=110)
    plt.close(fig)
    return ["fold_metrics.png", "fold_curves.png"]


def plot_leaderboard(report, out):
    board = [b for b in report["leaderboard"] if b["mean"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(board) + 1.5))
    labels = [f"#{b['rank']} trial {b['trial']}" for b in board]
    ax.barh(range(len(board)), [b["mean"] for b in board], xerr=[b["std"] or 0 for b in board], alpha=0.8)
    ax.set_yticks(range(len(board)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"{report['metric']} (mean ± std)", title=f"{report['method']} search")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "leaderboard.png"), dpi=110)
    plt.close(fig)
    return ["leaderboard.png"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out")
    a = ap.parse_args()
    out = a.out or os.path.join(a.run_dir, "analysis")
    os.makedirs(out, exist_ok=True)
    cv = os.path.join(a.run_dir, "cv_report.json")
    search = os.path.join(a.run_dir, "search_report.json")
    if os.path.isfile(cv):
        written = plot_folds(json.load(open(cv)), out)
    elif os.path.isfile(search):
        written = plot_leaderboard(json.load(open(search)), out)
    else:
        sys.exit(f"plot_cv: {a.run_dir}: neither cv_report.json nor search_report.json")
    for w in written:
        print(os.path.join(out, w))


if __name__ == "__main__":
    main()
