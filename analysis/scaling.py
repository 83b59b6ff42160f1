"""Collects the runs of a scaling study into a table of throughput, speed-up and efficiency,
and sets the performance model's predictions beside them.

    python analysis/scaling.py [RUN_DIR_OR_ROOT ...] [--out DIR] [--baseline N]
                               [--plan PLAN.json ...] [--validation RESULTS.json]

Each argument is an hpctrain run directory (it holds report.json) or a folder searched
recursively for run directories. Runs are grouped by ranks (report world.size) and nodes
(world.nodes); per group: repetitions, median/min/max of training.samples_per_s (global
samples / slowest rank's training time), median training.train_seconds, median per-step ms
by phase (time_per_step_ms.PHASE.mean) and the median final metrics present. With N_b the
baseline rank count (the smallest present, or --baseline):
  speed-up    S(N) = median samples/s on N ranks / median samples/s on N_b ranks
  efficiency  E(N) = S(N) / (N / N_b)
Writes into --out (default ROOT/analysis when the first argument is a root folder, else
scaling-out):
  scaling.csv          one row per (ranks, nodes) group, full precision
  scaling.md           the same as a Markdown table, the definitions and the plots
  speedup.png          measured speed-up against ranks, with the ideal line
  efficiency.png       parallel efficiency against ranks, with the 1.0 reference
  phases.png           stacked per-step ms by phase per group
  learning_curves.png  validation (or train) loss per epoch of every run, coloured by ranks
and prints the Markdown table. With --plan (`hpctrain plan --nodes --json`, one per scaling
mode) and --validation (bench/scaling_model.py --json), also model_extrapolation.png,
model_validation.png and model.csv (analysis/scaling_model.py; without run directories only
those). Formats: docs/outputs.md. Bad input exits with code 2.
"""
import argparse
import csv
import json
import math
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

import scaling_model  # noqa: E402  (analysis/, beside this file)

PHASES = ("data", "forward", "backward", "comm_exposed", "optimizer")
# Final metrics reported when at least one run has them (report.json `final`).
FINAL_KEYS = ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "test_rmse")
# Fields that should be equal across the runs of one study; a difference is noted.
SAME_FIELDS = (("config_file",), ("data", "name"), ("model", "name"), ("training", "global_batch"))
REPORT_FORMAT, REPORT_VERSION = "hpctrain-report", 1


def fail(msg):
    print(f"scaling: {msg}", file=sys.stderr)
    sys.exit(2)


def warn(msg):
    print(f"scaling: warning: {msg}", file=sys.stderr)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def field(report, path, keys, kind="number"):
    """report[keys[0]][keys[1]]...; exits naming the file and the field when missing or wrong."""
    name = ".".join(keys)
    v = report
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            fail(f"{path}: missing field {name}")
        v = v[k]
    if kind == "count":
        if not (is_number(v) and v == int(v) and v >= 1):
            fail(f"{path}: field {name}: expected a positive whole number, got {json.dumps(v)}")
        return int(v)
    if not is_number(v):
        fail(f"{path}: field {name}: expected a number, got {json.dumps(v)}")
    if kind == "positive" and v <= 0:
        fail(f"{path}: field {name}: expected a positive number, got {json.dumps(v)}")
    return float(v)


def optional(report, keys):
    v = report
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v


def find_runs(args):
    """(run directories holding report.json, directories with metrics.jsonl but no report.json)."""
    runs, incomplete, seen = [], [], set()

    def add(lst, d):
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            lst.append(d)

    for arg in args:
        if os.path.isfile(arg) and os.path.basename(arg) == "report.json":
            arg = os.path.dirname(arg) or "."
        if not os.path.exists(arg):
            fail(f"{arg}: no such file or directory")
        if not os.path.isdir(arg):
            fail(f"{arg}: not a directory (expected a run directory or a folder of runs)")
        if os.path.isfile(os.path.join(arg, "report.json")):
            add(runs, arg)
            continue
        for d, subdirs, files in os.walk(arg):
            subdirs.sort()
            if "report.json" in files:
                add(runs, d)
            elif "metrics.jsonl" in files:
                add(incomplete, d)
    return runs, incomplete


def read_metrics(path):
    """Epoch lines of metrics.jsonl by epoch number (the last line wins: a resumed run appends)."""
    epochs = {}
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                warn(f"{path}:{n}: not JSON, line skipped ({e})")
                continue
            if isinstance(obj, dict) and obj.get("type") == "epoch" and is_number(obj.get("epoch")):
                epochs[int(obj["epoch"])] = obj
    return [epochs[k] for k in sorted(epochs)]


def load_run(run_dir):
    path = os.path.join(run_dir, "report.json")
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except json.JSONDecodeError as e:
        fail(f"{path}: not valid JSON: {e}")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"{path}: cannot be read: {e}")
    if not isinstance(report, dict):
        fail(f"{path}: not a JSON object")
    fmt, version = report.get("format"), report.get("format_version")
    if fmt is not None and fmt != REPORT_FORMAT:
        fail(f"{path}: field format: {json.dumps(fmt)}, expected \"{REPORT_FORMAT}\"")
    if is_number(version) and version > REPORT_VERSION:
        fail(f"{path}: field format_version: {version}, this script reads version {REPORT_VERSION}")
    run = {
        "dir": run_dir,
        "report": report,
        "ranks": field(report, path, ("world", "size"), "count"),
        "nodes": field(report, path, ("world", "nodes"), "count"),
        "samples_per_s": field(report, path, ("training", "samples_per_s"), "positive"),
        "train_seconds": field(report, path, ("training", "train_seconds")),
        "phases": {p: field(report, path, ("time_per_step_ms", p, "mean")) for p in PHASES},
        "final": {},
    }
    for k in FINAL_KEYS:
        v = optional(report, ("final", k))
        if is_number(v):
            run["final"][k] = float(v)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    run["epochs"] = read_metrics(metrics) if os.path.isfile(metrics) else []
    if not run["epochs"] and isinstance(report.get("epochs"), list):
        run["epochs"] = [e for e in report["epochs"] if isinstance(e, dict) and is_number(e.get("epoch"))]
    return run


def group_runs(runs, baseline_ranks):
    groups = {}
    for run in runs:
        groups.setdefault((run["ranks"], run["nodes"]), []).append(run)
    present = sorted({r for r, _ in groups})
    nb = baseline_ranks if baseline_ranks is not None else present[0]
    if nb not in present:
        fail(f"--baseline {nb}: no run with {nb} ranks (present: {', '.join(map(str, present))})")
    base_key = min(k for k in groups if k[0] == nb)  # the fewest nodes
    base = statistics.median(r["samples_per_s"] for r in groups[base_key])
    final_keys = [k for k in FINAL_KEYS if any(k in r["final"] for r in runs)]
    rows = []
    for (ranks, nodes), members in sorted(groups.items()):
        sps = [r["samples_per_s"] for r in members]
        med = statistics.median(sps)
        scale = ranks / nb
        row = {
            "ranks": ranks, "nodes": nodes, "repetitions": len(members),
            "samples_per_s_median": med, "samples_per_s_min": min(sps), "samples_per_s_max": max(sps),
            "speedup": med / base, "efficiency": med / base / scale,
            "speedup_min": min(sps) / base, "speedup_max": max(sps) / base, "scale": scale,
            "train_seconds_median": statistics.median(r["train_seconds"] for r in members),
            "step_ms_median": statistics.median(sum(r["phases"].values()) for r in members),
        }
        for p in PHASES:
            row[f"{p}_ms_median"] = statistics.median(r["phases"][p] for r in members)
        for k in final_keys:
            vals = [r["final"][k] for r in members if k in r["final"]]
            row[f"final_{k}_median"] = statistics.median(vals) if vals else None
        rows.append(row)
    return rows, base_key, base, final_keys


def csv_columns(final_keys):
    return (["ranks", "nodes", "repetitions", "samples_per_s_median", "samples_per_s_min", "samples_per_s_max",
             "speedup", "efficiency", "train_seconds_median", "step_ms_median"] +
            [f"{p}_ms_median" for p in PHASES] + [f"final_{k}_median" for k in final_keys])


def write_csv(rows, final_keys, path):
    cols = csv_columns(final_keys)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in rows:
            w.writerow(["" if row[c] is None else repr(row[c]) for c in cols])


def markdown_table(rows, final_keys):
    head = (["ranks", "nodes", "runs", "samples/s median", "samples/s min–max", "speed-up", "efficiency",
             "train s", "step ms"] + [f"{p} ms" for p in PHASES] + [k.replace("_", " ") for k in final_keys])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["ranks"]), str(r["nodes"]), str(r["repetitions"]), f"{r['samples_per_s_median']:.1f}",
                 f"{r['samples_per_s_min']:.1f}–{r['samples_per_s_max']:.1f}", f"{r['speedup']:.3f}",
                 f"{r['efficiency']:.3f}", f"{r['train_seconds_median']:.2f}", f"{r['step_ms_median']:.2f}"]
        cells += [f"{r[f'{p}_ms_median']:.2f}" for p in PHASES]
        cells += ["-" if r[f"final_{k}_median"] is None else f"{r[f'final_{k}_median']:.4f}" for k in final_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def directories(n):
    return "1 run directory" if n == 1 else f"{n} run directories"


def write_markdown(rows, final_keys, runs, incomplete, base_key, base, loss_key, path):
    nb, nodes_b = base_key
    out = ["# Scaling study", "",
           f"{plural(len(runs), 'run')} in {plural(len(rows), 'group')} of (ranks, nodes). Medians over the "
           "repetitions of each group; per-step times are the mean over ranks (`time_per_step_ms.PHASE.mean`).", "",
           markdown_table(rows, final_keys), "",
           f"Baseline: {plural(nb, 'rank')} on {plural(nodes_b, 'node')}, median {base:.1f} samples/s "
           "(`training.samples_per_s`: global samples / slowest rank's training time). "
           f"Speed-up S(N) = median samples/s on N ranks / median samples/s of the baseline; "
           f"parallel efficiency E(N) = S(N) / (N / {nb}).", ""]
    differ = []
    for keys in SAME_FIELDS:
        vals = {json.dumps(optional(r["report"], keys), sort_keys=True) for r in runs}
        if len(vals) > 1:
            differ.append(".".join(keys))
    if differ:
        out += [f"Note: the runs differ in {', '.join('`' + d + '`' for d in differ)}.", ""]
    if incomplete:
        shown = ", ".join(f"`{d}`" for d in incomplete[:20]) + (", …" if len(incomplete) > 20 else "")
        out += [f"{directories(len(incomplete))} had metrics.jsonl but no report.json "
                f"(incomplete runs, not included): {shown}.", ""]
    out += ["![speed-up](speedup.png)", "", "![parallel efficiency](efficiency.png)", "",
            "![time per step by phase](phases.png)", "",
            f"![learning curves ({loss_key or 'no epoch data'})](learning_curves.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(out))


def rank_axis(ax, ranks, log_y=False):
    """Ranks on x (log 2 when they span a factor of 4 or more); log 2 on y too for the speed-up."""
    ranks = sorted(set(ranks))
    log = len(ranks) > 2 and ranks[-1] / ranks[0] >= 4
    if log:
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks(ranks)
    ax.set_xticklabels([str(r) for r in ranks])
    ax.minorticks_off()


def scaling_plot(rows, nb, kind, path):
    """Speed-up or efficiency: a line through the fewest-node group of each rank count; groups with
    the same ranks on more nodes as separate markers. Bars: min and max of the repetitions."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ranks = [r["ranks"] for r in rows]
    lo, hi = min(ranks), max(ranks)
    several_nodes = len({r["nodes"] for r in rows}) > 1
    main = [min((r for r in rows if r["ranks"] == n), key=lambda r: r["nodes"]) for n in sorted(set(ranks))]
    extra = [r for r in rows if all(r is not m for m in main)]
    for rs, style, label, dy in ((main, "-o", "measured", -12), (extra, "s", "measured, same ranks on more nodes", 4)):
        if not rs:
            continue
        div = [r["scale"] if kind == "efficiency" else 1.0 for r in rs]
        y = [r[kind] for r in rs]
        err = [[r[kind] - r["speedup_min"] / d for r, d in zip(rs, div)],
               [r["speedup_max"] / d - r[kind] for r, d in zip(rs, div)]]
        ax.errorbar([r["ranks"] for r in rs], y, yerr=err, fmt=style, capsize=3,
                    label=label + " (median, min–max)")
        if several_nodes:
            for r in rs:
                ax.annotate(plural(r["nodes"], "node"), (r["ranks"], r[kind]), textcoords="offset points",
                            xytext=(5, dy), fontsize=7)
    if kind == "speedup":
        xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
        ax.plot(xs, [x / nb for x in xs], "k--", lw=1, label=f"ideal (N / {nb})")
        ax.set(ylabel=f"speed-up over {plural(nb, 'rank')}", title="speed-up")
    else:
        ax.axhline(1.0, color="k", ls="--", lw=1, label="ideal (1.0)")
        ax.set_ylim(bottom=0, top=max(1.1, max(r["speedup_max"] / r["scale"] for r in rows) * 1.05))
        ax.set(ylabel="parallel efficiency", title="parallel efficiency")
    rank_axis(ax, ranks, log_y=kind == "speedup")
    ax.set_xlabel("ranks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def group_label(r, several_nodes):
    return f"{r['ranks']}\n{plural(r['nodes'], 'node')}" if several_nodes else str(r["ranks"])


def phases_plot(rows, path):
    several_nodes = len({r["nodes"] for r in rows}) > 1
    labels = [group_label(r, several_nodes) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 3), 4.5))
    bottom = [0.0] * len(rows)
    for p in PHASES:
        vals = [r[f"{p}_ms_median"] for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels)
    ax.set(xlabel="ranks", ylabel="ms per step (mean over ranks, median over runs)", title="time per step by phase")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_key(runs):
    """val_loss when every run with epochs has it in every epoch, else train_loss (None: no epoch data)."""
    with_epochs = [r for r in runs if r["epochs"]]
    if not with_epochs:
        return None
    if all("val_loss" in e for r in with_epochs for e in r["epochs"]):
        return "val_loss"
    return "train_loss"


def curves_plot(runs, key, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ranks = sorted({r["ranks"] for r in runs})
    cmap = plt.get_cmap("tab10" if len(ranks) <= 10 else "viridis")
    color = {n: cmap(i if len(ranks) <= 10 else i / max(1, len(ranks) - 1)) for i, n in enumerate(ranks)}
    labelled = set()
    for run in sorted(runs, key=lambda r: (r["ranks"], r["dir"])):
        if not run["epochs"]:
            continue
        x = [e["epoch"] + 1 for e in run["epochs"]]
        y = [float(e[key]) if is_number(e.get(key)) else float("nan") for e in run["epochs"]]
        n = run["ranks"]
        ax.plot(x, y, marker="o", ms=3, lw=1, color=color[n], alpha=0.8,
                label=None if n in labelled else plural(n, "rank"))
        labelled.add(n)
    if key is None:
        ax.text(0.5, 0.5, "no epoch data", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    name = {"val_loss": "validation loss", "train_loss": "training loss"}.get(key, "loss")
    ax.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch, every run")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_model(out, validation, plans, rows):
    try:
        written = scaling_model.write(out, validation, plans, rows)
    except scaling_model.ModelInputError as e:
        fail(str(e))
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_ROOT", help="run directories or folders of runs")
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--baseline", type=int, metavar="N", help="baseline rank count (default: the smallest present)")
    ap.add_argument("--plan", action="append", default=[], metavar="PLAN.json",
                    help="hpctrain plan --nodes --json: predictions to extrapolate and compare (repeatable)")
    ap.add_argument("--validation", metavar="RESULTS.json", help="bench/scaling_model.py --json: predicted vs measured")
    args = ap.parse_args()
    if args.baseline is not None and args.baseline < 1:
        fail(f"--baseline {args.baseline}: expected a positive rank count")
    if not args.paths:
        if not args.plan and not args.validation:
            ap.error("give run directories, --plan or --validation")
        out = args.out or "scaling-out"
        os.makedirs(out, exist_ok=True)
        print(f"scaling: wrote {out}/" + ", ".join(write_model(out, args.validation, args.plan, [])))
        return
    run_dirs, incomplete = find_runs(args.paths)
    if not run_dirs:
        extra = (f" ({directories(len(incomplete))} with metrics.jsonl but no report.json: incomplete runs)"
                 if incomplete else "")
        fail(f"{', '.join(args.paths)}: no report.json found{extra}")
    runs = [load_run(d) for d in run_dirs]
    rows, base_key, base, final_keys = group_runs(runs, args.baseline)
    first = args.paths[0]
    first_is_root = os.path.isdir(first) and not os.path.isfile(os.path.join(first, "report.json"))
    out = args.out or (os.path.join(first, "analysis") if first_is_root else "scaling-out")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        fail(f"{out}: cannot create the output folder: {e}")
    key = curve_key(runs)
    write_csv(rows, final_keys, os.path.join(out, "scaling.csv"))
    write_markdown(rows, final_keys, runs, incomplete, base_key, base, key, os.path.join(out, "scaling.md"))
    scaling_plot(rows, base_key[0], "speedup", os.path.join(out, "speedup.png"))
    scaling_plot(rows, base_key[0], "efficiency", os.path.join(out, "efficiency.png"))
    phases_plot(rows, os.path.join(out, "phases.png"))
    curves_plot(runs, key, os.path.join(out, "learning_curves.png"))
    if args.plan or args.validation:
        write_model(out, args.validation, args.plan, rows)
    print(f"scaling: {plural(len(runs), 'run')} in {plural(len(rows), 'group')}"
          + (f", {len(incomplete)} incomplete (no report.json)" if incomplete else "")
          + f"; wrote {out}/scaling.csv, scaling.md, speedup.png, efficiency.png, phases.png, learning_curves.png")
    print(markdown_table(rows, final_keys))


if __name__ == "__main__":
    main()
