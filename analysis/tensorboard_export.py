"""TensorBoard event files for every hpctrain run, cross-validation and search under a folder.

    python analysis/tensorboard_export.py RUNS_DIR [--out LOGDIR]
    tensorboard --logdir LOGDIR

Walks RUNS_DIR (itself included) for run directories (report.json and metrics.jsonl,
docs/outputs.md) and cross-validation or search directories (cv_report.json,
search_report.json, docs/cv-and-search.md) and writes one TensorBoard run per hpctrain run,
fold and trial, under LOGDIR (default RUNS_DIR/tensorboard) at the same relative path:

  run             metrics.jsonl as it is: `step` lines as train/loss, train/lr,
                  train/samples_per_s at their step; `epoch` lines as epoch/<field> at the
                  epoch (1-based); the `test` line as test/<field> at the last step;
                  `system` lines as system/<figure>/{min,mean,max} at their after_step
                  (the last logged step before them)
  fold            <cv>/repeatR_foldF: the fold's epoch records as epoch/<field>, its
                  held-out metrics as fold/<metric> at step 0
  cross-validation <cv>/summary: cv/<metric>/{mean,std} at step 0
  search trial    <search>/trialT/repeatR_foldF as a fold (its last rung), and
                  <search>/trialT: trial/<metric>/{mean,std} and trial/rank at step 0

Values are written as TensorBoard stores them (32-bit floats).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError as e:  # torch is in .venv; tensorboard is its writer's backend
    sys.exit(f"tensorboard_export: {e} (install the pinned requirements: bash scripts/setup.sh)")

EPOCH_SKIP = ("epoch", "type")


def writer(logdir):
    """A writer for `logdir`, whose event files from an earlier export are removed first so
    that exporting again replaces them instead of adding a second copy of every value."""
    if os.path.isdir(logdir):
        for name in os.listdir(logdir):
            if name.startswith("events.out.tfevents."):
                os.remove(os.path.join(logdir, name))
    return SummaryWriter(logdir)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_lines(path):
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"tensorboard_export: {path}:{n}: not JSON: {e}")
    return out


def write_epochs(w, records):
    for e in records:
        for key, value in e.items():
            if key not in EPOCH_SKIP and is_number(value):
                w.add_scalar(f"epoch/{key}", value, e["epoch"] + 1)


def export_run(run_dir, logdir):
    lines = read_lines(os.path.join(run_dir, "metrics.jsonl"))
    last_step = 0
    with writer(logdir) as w:
        for line in lines:
            kind = line.get("type")
            if kind == "step":
                last_step = line["step"]
                for key in ("loss", "lr", "samples_per_s"):
                    if is_number(line.get(key)):
                        w.add_scalar(f"train/{key}", line[key], line["step"])
            elif kind == "epoch":
                write_epochs(w, [line])
            elif kind == "test":
                for key, value in line.items():
                    if key != "type" and is_number(value):
                        w.add_scalar(f"test/{key}", value, last_step)
            elif kind == "system":
                for key, value in line.items():
                    if isinstance(value, dict):
                        for stat in ("min", "mean", "max"):
                            if is_number(value.get(stat)):
                                w.add_scalar(f"system/{key}/{stat}", value[stat], line.get("after_step", 0))
    return 1


def export_fold(task, logdir):
    with writer(logdir) as w:
        write_epochs(w, task.get("epoch_records", []))
        for key, value in task.get("metrics", {}).items():
            if is_number(value):
                w.add_scalar(f"fold/{key}", value, 0)
        for key in ("train_seconds", "samples_per_s"):
            if is_number(task.get(key)):
                w.add_scalar(f"fold/{key}", task[key], 0)


def fold_name(task):
    return "holdout" if task.get("fold", 0) < 0 else f"repeat{task['repeat']}_fold{task['fold']}"


def export_summary(w, prefix, summary):
    for metric, s in summary.items():
        if isinstance(s, dict):
            for stat in ("mean", "std"):
                if is_number(s.get(stat)):
                    w.add_scalar(f"{prefix}/{metric}/{stat}", s[stat], 0)


def export_cv(report, logdir):
    tasks = [t for t in report.get("folds_detail", []) if t.get("status") == "ok"]
    for t in tasks:
        export_fold(t, os.path.join(logdir, fold_name(t)))
    with writer(os.path.join(logdir, "summary")) as w:
        export_summary(w, "cv", report.get("summary", {}))
    return len(tasks) + 1


def export_search(report, logdir):
    # A trial's folds of its last rung (halving trains survivors again, longer).
    last = {}
    for t in report.get("tasks", []):
        if t.get("status") == "ok":
            key = (t["trial"], t.get("repeat"), t.get("fold"))
            if key not in last or t.get("rung", 0) >= last[key].get("rung", 0):
                last[key] = t
    for t in last.values():
        export_fold(t, os.path.join(logdir, f"trial{t['trial']}", fold_name(t)))
    for b in report.get("leaderboard", []):
        with writer(os.path.join(logdir, f"trial{b['trial']}")) as w:
            w.add_scalar("trial/rank", b["rank"], 0)
            export_summary(w, "trial", b.get("summary") or {})
    return len(last) + len(report.get("leaderboard", []))


def export_all(root, out):
    written = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(folder, d)) != os.path.abspath(out))
        logdir = os.path.join(out, os.path.relpath(folder, root))
        if "search_report.json" in files:
            written += export_search(json.load(open(os.path.join(folder, "search_report.json"))), logdir)
        elif "cv_report.json" in files:
            written += export_cv(json.load(open(os.path.join(folder, "cv_report.json"))), logdir)
        elif "report.json" in files and "metrics.jsonl" in files:
            written += export_run(folder, logdir)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir")
    ap.add_argument("--out", help="TensorBoard log folder (default RUNS_DIR/tensorboard)")
    a = ap.parse_args()
    if not os.path.isdir(a.runs_dir):
        sys.exit(f"tensorboard_export: {a.runs_dir}: not a folder")
    out = a.out or os.path.join(a.runs_dir, "tensorboard")
    n = export_all(a.runs_dir, out)
    if n == 0:
        sys.exit(f"tensorboard_export: {a.runs_dir}: no run, cross-validation or search found")
    print(f"{n} TensorBoard runs in {out}; view with: tensorboard --logdir {out}")


if __name__ == "__main__":
    main()
