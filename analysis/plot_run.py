"""Turns hpctrain run directories into plots and a Markdown summary.

    python analysis/plot_run.py RUN_DIR [RUN_DIR ...] [--out DIR]

Per run it reads metrics.jsonl and report.json (docs/outputs.md) and writes, into --out
(default RUN_DIR/analysis for one run, analysis-out for several):
  learning_curves.png  train/validation/test loss and accuracy per epoch, step loss
  step_time.png        mean time per step split by phase, one bar per run
  summary.md           run, ranks, samples/s, test accuracy, step time split
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PHASES = ("data", "forward", "backward", "comm_exposed", "optimizer")


def load(run_dir):
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    report_path = os.path.join(run_dir, "report.json")
    for path in (metrics_path, report_path):
        if not os.path.isfile(path):
            sys.exit(f"plot_run: {path}: missing (is {run_dir} an hpctrain run directory?)")
    lines = []
    with open(metrics_path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"plot_run: {metrics_path}:{n}: not JSON: {e}")
    with open(report_path) as f:
        report = json.load(f)
    return {"name": os.path.basename(os.path.normpath(run_dir)), "lines": lines, "report": report}


def learning_curves(runs, path):
    fig, (ax_loss, ax_acc, ax_step) = plt.subplots(1, 3, figsize=(15, 4))
    for run in runs:
        epochs = [l for l in run["lines"] if l["type"] == "epoch"]
        x = [e["epoch"] + 1 for e in epochs]
        for key, style in (("train", "-"), ("val", "--"), ("test", ":")):
            if epochs and f"{key}_loss" in epochs[0]:
                ax_loss.plot(x, [e[f"{key}_loss"] for e in epochs], style, marker="o", label=f"{run['name']} {key}")
                if f"{key}_accuracy" in epochs[0]:  # regression runs have none
                    ax_acc.plot(x, [e[f"{key}_accuracy"] for e in epochs], style, marker="o",
                                label=f"{run['name']} {key}")
        steps = [l for l in run["lines"] if l["type"] == "step"]
        ax_step.plot([s["step"] for s in steps], [s["loss"] for s in steps], label=run["name"])
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch")
    ax_step.set(xlabel="step", ylabel="loss", title="training loss per logged step")
    for ax in (ax_loss, ax_acc, ax_step):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def step_time(runs, path):
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(runs) + 3), 4))
    names = [r["name"] for r in runs]
    bottom = [0.0] * len(runs)
    for phase in PHASES:
        vals = [r["report"]["time_per_step_ms"].get(phase, {}).get("mean", 0.0) for r in runs]
        ax.bar(names, vals, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(ylabel="ms per step (mean over ranks)", title="time per step by phase")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(runs, path):
    rows = ["| run | ranks | samples/s | test accuracy | step ms | " + " | ".join(PHASES) + " |",
            "|---|---|---|---|---|" + "---|" * len(PHASES)]
    for run in runs:
        r = run["report"]
        t = r["time_per_step_ms"]
        acc = r.get("final", {}).get("test_accuracy")
        rows.append(f"| {run['name']} | {r['world']['size']} | {r['training']['samples_per_s']:.0f} | "
                    f"{'-' if acc is None else f'{acc:.4f}'} | {t['total_mean']:.2f} | " +
                    " | ".join(f"{t[p]['mean']:.2f}" if p in t else "-" for p in PHASES) + " |")
    with open(path, "w") as f:
        f.write("# hpctrain runs\n\n" + "\n".join(rows) + "\n\n![learning curves](learning_curves.png)\n\n"
                "![time per step](step_time.png)\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories")
    ap.add_argument("--out", help="output folder")
    args = ap.parse_args()
    runs = [load(d) for d in args.runs]
    out = args.out or (os.path.join(args.runs[0], "analysis") if len(runs) == 1 else "analysis-out")
    os.makedirs(out, exist_ok=True)
    learning_curves(runs, os.path.join(out, "learning_curves.png"))
    step_time(runs, os.path.join(out, "step_time.png"))
    summary(runs, os.path.join(out, "summary.md"))
    print(f"wrote {out}/learning_curves.png, step_time.png, summary.md")


if __name__ == "__main__":
    main()
