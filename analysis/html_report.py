"""One self-contained HTML page for an hpctrain run, cross-validation or search.

    python analysis/html_report.py RUN_DIR [-o FILE]

RUN_DIR is a run directory (report.json, metrics.jsonl: docs/outputs.md) or a
cross-validation or search directory (cv_report.json or search_report.json:
docs/cv-and-search.md), whose final retrain in RUN_DIR/final is shown too when it exists.
The page holds learning curves, the step time split per rank and its imbalance, memory,
the confusion matrix and per-class metrics, the fold table with mean, standard deviation
and 95% confidence interval, the leaderboard, the system timeline (metrics.jsonl `system`
lines) and the recommendations of report.json. Plots are PNG images embedded as base64,
so the page needs no network and no other file. Writes RUN_DIR/report.html by default.
"""
import argparse
import base64
import html
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_cv  # noqa: E402  (sets the Agg backend)
import plot_run  # noqa: E402
from plot_run import PHASES, plt  # noqa: E402

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; padding: 0 2em; max-width: 1200px; color: #222; background: #fff; }
h1 { border-bottom: 2px solid #36c; padding-bottom: .2em; }
h2 { color: #36c; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #eef; } td.l, th.l { text-align: left; }
img { max-width: 100%; }
.warning { background: #fff3d6; } .info { background: #e8f4ff; }
.note { color: #666; font-style: italic; }
"""


def esc(x):
    return html.escape(str(x))


def num(x, digits=4):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return esc(x)


def table(header, rows, left=1):
    """An HTML table; the first `left` columns left-aligned."""
    def cells(row, tag):
        return "".join(f"<{tag}{' class=l' if i < left else ''}>{c}</{tag}>" for i, c in enumerate(row))
    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><tr>{cells(header, 'th')}</tr>{body}</table>"


def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return img_tag(buf.getvalue())


def img_tag(data):
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def png_file(path):
    with open(path, "rb") as f:
        return img_tag(f.read())


def section(ident, title, body):
    return f'<section id="{ident}"><h2>{esc(title)}</h2>{body}</section>'


# --- one run ---------------------------------------------------------------------------

def run_summary(run):
    r = run["report"]
    t, w, tr, fin = r.get("time_per_step_ms", {}), r.get("world", {}), r.get("training", {}), r.get("final", {})
    rows = [("ranks", w.get("size")), ("nodes", w.get("nodes")), ("device", w.get("device")),
            ("model", r.get("model", {}).get("name")), ("parameters", r.get("model", {}).get("parameters")),
            ("steps", tr.get("steps")), ("stop reason", tr.get("stop_reason")),
            ("samples/s", tr.get("samples_per_s")), ("train seconds", tr.get("train_seconds")),
            ("step ms (mean)", t.get("total_mean")),
            ("exposed communication share", r.get("communication", {}).get("exposed_share_of_step"))]
    rows += [(k.replace("_", " "), v) for k, v in fin.items() if not isinstance(v, (list, dict))]
    return table(["figure", "value"], [(esc(k), num(v)) for k, v in rows])


def recommendations(report):
    recs = report.get("recommendations")
    if recs is None:
        return '<p class="note">this report predates recommendations</p>'
    if not recs:
        return "<p>No rule fired: nothing to change on the measured figures.</p>"
    rows = "".join(f'<tr class="{esc(x["severity"])}"><td class=l>{esc(x["severity"])}</td><td class=l>{esc(x["rule"])}'
                   f'</td><td class=l>{esc(x["evidence"])}</td><td class=l>{esc(x["suggestion"])}</td></tr>'
                   for x in recs)
    return ("<table><tr><th class=l>severity</th><th class=l>rule</th><th class=l>evidence</th>"
            f"<th class=l>suggestion</th></tr>{rows}</table>")


def learning_curves(run, tmp):
    path = os.path.join(tmp, "curves.png")
    plot_run.learning_curves([run], path)
    return png_file(path)


def step_time_per_rank(report):
    t = report.get("time_per_step_ms", {})
    per_rank = {p: t[p].get("per_rank", []) for p in PHASES if p in t}
    ranks = max((len(v) for v in per_rank.values()), default=0)
    if not ranks:
        return '<p class="note">no per-rank step times</p>'
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * ranks + 3), 3.6))
    bottom = [0.0] * ranks
    for phase, values in per_rank.items():
        values = (values + [0.0] * ranks)[:ranks]
        ax.bar(range(ranks), values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(xlabel="rank", ylabel="ms per step", title="time per step by phase, per rank")
    ax.set_xticks(range(ranks))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    rows = [(esc(p), num(t[p].get("min")), num(t[p].get("mean")), num(t[p].get("max")), num(t[p].get("imbalance")))
            for p in list(PHASES) + ["comm_total"] if p in t]
    return png(fig) + "<h3>imbalance (max / mean over ranks)</h3>" + table(
        ["phase", "min ms", "mean ms", "max ms", "imbalance"], rows)


def memory(report):
    m = report.get("memory", {})
    rows = []
    for key in ("peak_rss_bytes", "gpu_peak_allocated_bytes", "gpu_reserved_bytes"):
        s = m.get(key)
        if s and s.get("max"):
            rows.append((esc(key), num(s["min"] / 2**20), num(s["mean"] / 2**20), num(s["max"] / 2**20),
                         num(s.get("imbalance"))))
    node_mem = report.get("system", {}).get("memory_bytes", {}).get("max")
    note = f"<p>node memory: {num(node_mem / 2**30)} GiB</p>" if node_mem else ""
    rss = m.get("peak_rss_bytes", {}).get("per_rank", [])
    plot = ""
    if rss:
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rss) + 2), 3))
        ax.bar(range(len(rss)), [x / 2**20 for x in rss])
        ax.set(xlabel="rank", ylabel="MiB", title="peak resident memory per rank")
        ax.set_xticks(range(len(rss)))
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        plot = png(fig)
    shard = report.get("parallel", {}).get("shard")
    held = ""
    if isinstance(shard, dict) and shard.get("parameter_bytes"):
        keys = ("parameter_bytes", "gradient_bytes", "optimizer_state_bytes", "gradient_bucket_peak_bytes")
        held = (f"<h3>training state per rank (parallel.shard={esc(shard.get('stage'))}"
                f"{'' if shard.get('active') else ', inactive'}), MiB</h3>" +
                table(["rank"] + [k.replace("_bytes", "").replace("_", " ") for k in keys],
                      [[esc(i)] + [num(shard[k][i] / 2**20) if i < len(shard.get(k, [])) else "-" for k in keys]
                       for i in range(len(shard["parameter_bytes"]))]))
    return table(["memory", "min MiB", "mean MiB", "max MiB", "imbalance"], rows) + note + held + plot


def confusion_plot(confusion, names):
    k = len(confusion)
    fig, ax = plt.subplots(figsize=(min(9, 1 + 0.55 * k), min(8, 0.8 + 0.5 * k)))
    ax.imshow(confusion, cmap="Blues")
    labels = names if len(names) == k else [str(i) for i in range(k)]
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(labels, rotation=60, fontsize=7, ha="right")
    ax.set_yticklabels(labels, fontsize=7)
    top = max(max(row) for row in confusion) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, confusion[i][j], ha="center", va="center", fontsize=6,
                    color="white" if confusion[i][j] > top / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    fig.tight_layout()
    return png(fig)


def per_class_from_confusion(confusion):
    """precision, recall, f1, support per class (scikit-learn's definitions, 0 when undefined)."""
    k = len(confusion)
    out = {"precision": [], "recall": [], "f1": [], "support": []}
    for c in range(k):
        tp = confusion[c][c]
        predicted = sum(confusion[i][c] for i in range(k))
        support = sum(confusion[c])
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        out["precision"].append(p)
        out["recall"].append(r)
        out["f1"].append(2 * p * r / (p + r) if p + r else 0.0)
        out["support"].append(support)
    return out


def per_class_table(per_class, names):
    k = len(per_class["support"])
    labels = names if len(names) == k else [str(i) for i in range(k)]
    rows = [(esc(labels[c]), num(per_class["precision"][c]), num(per_class["recall"][c]), num(per_class["f1"][c]),
             num(per_class["support"][c])) for c in range(k)]
    return table(["class", "precision", "recall", "F1", "support"], rows)


def system_timeline(lines):
    samples = [x for x in lines if x.get("type") == "system"]
    if not samples:
        return '<p class="note">no <code>system</code> lines in metrics.jsonl (run.monitor_seconds=0)</p>'
    figures = [(k, lbl, scale) for k, lbl, scale in (
        ("cpu_utilization", "CPU utilization (cores busy)", 1), ("rss_bytes", "resident memory MiB", 2**-20),
        ("gpu_utilization", "GPU utilization", 1), ("gpu_memory_bytes", "GPU memory MiB", 2**-20),
        ("gpu_power_w", "GPU power W", 1)) if any(k in s for s in samples)]
    fig, axes = plt.subplots(1, len(figures), figsize=(4.2 * len(figures), 3.2), squeeze=False)
    for ax, (key, label, scale) in zip(axes[0], figures):
        rows = [s for s in samples if key in s]
        x = [s["elapsed_s"] for s in rows]
        ax.plot(x, [s[key]["mean"] * scale for s in rows], label="mean")
        ax.fill_between(x, [s[key]["min"] * scale for s in rows], [s[key]["max"] * scale for s in rows], alpha=0.25,
                        label="min-max over ranks")
        ax.set(xlabel="seconds", title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    last = samples[-1]
    rows = [(esc(label), num(last[k]["min"] * scale), num(last[k]["mean"] * scale), num(last[k]["max"] * scale),
             esc(last[k].get("max_rank", "-"))) for k, label, scale in figures if k in last]
    note = (f"<p>{len(samples)} lines, interval about {num(report_interval(samples))} s; NVML: "
            f"{esc(last.get('nvml', 'n/a'))}. At the last line ({esc(last.get('ranks_sampled'))} ranks sampled):</p>")
    return png(fig) + note + table(["figure", "min", "mean", "max", "rank of max"], rows)


def report_interval(samples):
    if len(samples) < 2:
        return None
    return (samples[-1]["elapsed_s"] - samples[0]["elapsed_s"]) / (len(samples) - 1)


def monitor_summary(report):
    m = report.get("system", {}).get("monitor")
    if not m:
        return ""
    rows = [(esc(k), num(m[k].get("min")), num(m[k].get("mean")), num(m[k].get("max")))
            for k in ("cpu_utilization", "rss_bytes", "gpu_utilization", "gpu_memory_bytes", "gpu_power_w",
                      "main_thread_seconds", "sampler_seconds") if isinstance(m.get(k), dict)]
    return (f"<h3>over the run (report.json system.monitor)</h3><p>the monitor's main-thread cost: "
            f"{num(100 * m.get('main_thread_share_of_training', 0))}% of training time</p>" +
            table(["figure", "min over ranks", "mean", "max"], rows))


def run_sections(run_dir, tmp, prefix=""):
    run = plot_run.load(run_dir)
    report = run["report"]
    final = report.get("final", {})
    names = report.get("data", {}).get("class_names", [])
    parts = [section(prefix + "summary", "Summary", run_summary(run)),
             section(prefix + "recommendations", "Recommendations", recommendations(report)),
             section(prefix + "learning-curves", "Learning curves", learning_curves(run, tmp)),
             section(prefix + "step-time", "Step time per rank", step_time_per_rank(report)),
             section(prefix + "memory", "Memory", memory(report))]
    confusion = final.get("test_confusion")
    if confusion:
        parts.append(section(prefix + "confusion", "Confusion matrix (test)", confusion_plot(confusion, names)))
        parts.append(section(prefix + "per-class", "Per-class metrics (test)",
                             per_class_table(per_class_from_confusion(confusion), names)))
    parts.append(section(prefix + "system", "System timeline",
                         system_timeline(run["lines"]) + monitor_summary(report)))
    return parts


# --- cross-validation and search ----------------------------------------------------------

def summary_table(summary):
    rows = []
    for metric, s in summary.items():
        if isinstance(s, dict) and "mean" in s:
            ci = s.get("ci95") or [None, None]
            rows.append((esc(metric), num(s.get("n")), num(s["mean"]), num(s.get("std")), num(ci[0]), num(ci[1])))
    return table(["metric", "n", "mean", "std", "95% CI low", "95% CI high"], rows)


def fold_table(report):
    metrics = plot_cv.CLASSIFICATION if report.get("task") == "classification" else plot_cv.REGRESSION
    rows = []
    for f in report.get("folds_detail", []):
        m = f.get("metrics", {})
        rows.append([esc(f.get("repeat")), esc(f.get("fold")), esc(f.get("status"))] +
                    [num(m.get(k)) for k in metrics + ("loss",)] + [num(f.get("train_seconds"))])
    return table(["repeat", "fold", "status"] + list(metrics) + ["loss", "train s"], rows, left=3)


def cv_sections(report, tmp):
    parts = [section("folds", "Folds", fold_table(report) + "<h3>mean, standard deviation, 95% CI</h3>" +
                     summary_table(report.get("summary", {})))]
    written = plot_cv.plot_folds(report, tmp)
    parts.append(section("fold-plots", "Fold metrics and learning curves",
                         "".join(png_file(os.path.join(tmp, w)) for w in written)))
    folds = [f for f in report.get("folds_detail", []) if f.get("status") == "ok" and f.get("confusion")]
    if folds:
        k = len(folds[0]["confusion"])
        total = [[sum(f["confusion"][i][j] for f in folds) for j in range(k)] for i in range(k)]
        names = report.get("data", {}).get("class_names", []) if isinstance(report.get("data"), dict) else []
        parts.append(section("confusion", "Confusion matrix (held-out rows of every fold)",
                             confusion_plot(total, names)))
        parts.append(section("per-class", "Per-class metrics (every fold's held-out rows)",
                             per_class_table(per_class_from_confusion(total), names)))
    return parts


def search_sections(report, tmp):
    rows = [(esc(b["rank"]), esc(b["trial"]), esc(json.dumps(b.get("parameters", {}))), num(b.get("mean")),
             num(b.get("std")), esc(b.get("folds_ok")), esc(b.get("status"))) for b in report.get("leaderboard", [])]
    body = (f"<p>{esc(report.get('method'))} search on {esc(report.get('metric'))} "
            f"({'lower' if report.get('lower_is_better') else 'higher'} is better); best trial "
            f"{esc(report.get('best_trial'))}</p>" +
            table(["rank", "trial", "parameters", "mean", "std", "folds ok", "status"], rows, left=3))
    written = plot_cv.plot_leaderboard(report, tmp) if any(b.get("mean") is not None
                                                         for b in report.get("leaderboard", [])) else []
    parts = [section("leaderboard", "Leaderboard", body + "".join(png_file(os.path.join(tmp, w)) for w in written))]
    best = next((b for b in report.get("leaderboard", []) if b.get("summary")), None)
    if best:
        parts.append(section("best-trial", f"Trial {best['trial']}: mean, standard deviation, 95% CI over its folds",
                             summary_table(best["summary"])))
    return parts


def render(run_dir):
    with tempfile.TemporaryDirectory(prefix="hpctrain_html_") as tmp:
        cv = os.path.join(run_dir, "cv_report.json")
        search = os.path.join(run_dir, "search_report.json")
        if os.path.isfile(search):
            kind, parts = "search", search_sections(json.load(open(search)), tmp)
        elif os.path.isfile(cv):
            kind, parts = "cross-validation", cv_sections(json.load(open(cv)), tmp)
        elif os.path.isfile(os.path.join(run_dir, "report.json")):
            kind, parts = "run", run_sections(run_dir, tmp)
        else:
            sys.exit(f"html_report: {run_dir}: no report.json, cv_report.json or search_report.json "
                     "(not an hpctrain run directory, or the run has not finished)")
        final = os.path.join(run_dir, "final")
        if kind != "run" and os.path.isfile(os.path.join(final, "report.json")):
            parts.append("<h1>Final retrain</h1>")
            parts += run_sections(final, tmp, prefix="final-")
    title = f"hpctrain {kind}: {os.path.basename(os.path.normpath(run_dir))}"
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p class=note>{esc(run_dir)}"
            f"</p>{''.join(parts)}</body></html>\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("-o", "--output", help="HTML file (default RUN_DIR/report.html)")
    a = ap.parse_args()
    out = a.output or os.path.join(a.run_dir, "report.html")
    page = render(a.run_dir)
    with open(out, "w") as f:
        f.write(page)
    print(out)


if __name__ == "__main__":
    main()
