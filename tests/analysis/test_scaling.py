"""analysis/scaling.py on a scaling study made here: run directories of 1, 2 and 4 ranks, two
repetitions each, with report.json and metrics.jsonl as docs/outputs.md describes them; the
speed-up and efficiency against hand-computed medians, the plots, scaling.md, and bad input."""
import csv
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import SOURCE, Checks  # noqa: E402

SCRIPT = os.path.join(SOURCE, "analysis", "scaling.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PHASES = ("data", "forward", "backward", "comm_exposed", "optimizer")
GLOBAL_BATCH, STEPS_PER_EPOCH, EPOCHS = 64, 50, 3
# (ranks, nodes) -> training.samples_per_s of the two repetitions
THROUGHPUT = {(1, 1): (1000.0, 1100.0), (2, 1): (1800.0, 1900.0), (4, 2): (3000.0, 3400.0)}


def spread(values):
    mean = sum(values) / len(values)
    return {"min": min(values), "mean": mean, "max": max(values),
            "imbalance": max(values) / mean if mean > 0 else 1, "per_rank": list(values)}


def write_run(run_dir, ranks, nodes, samples_per_s, rep):
    """A finished run: config.json, metrics.jsonl and report.json in the documented formats."""
    os.makedirs(run_dir)
    steps = STEPS_PER_EPOCH * EPOCHS
    samples = steps * GLOBAL_BATCH
    train_seconds = samples / samples_per_s
    epoch_seconds = train_seconds / EPOCHS
    json.dump({"run": {"dir": run_dir}}, open(os.path.join(run_dir, "config.json"), "w"), indent=2)
    epochs = []
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for e in range(EPOCHS):
            for s in (10, 20, 30, 40, 50):
                step = e * STEPS_PER_EPOCH + s
                f.write(json.dumps({"type": "step", "step": step, "epoch": e, "loss": 2.0 / (1 + step / 50),
                                    "lr": 0.01, "samples_per_s": samples_per_s,
                                    "elapsed_s": step * GLOBAL_BATCH / samples_per_s}, separators=(",", ":")) + "\n")
            epoch = {"epoch": e, "train_loss": 1.5 / (e + 1) + 0.01 * rep, "train_accuracy": 0.5 + 0.1 * e, "lr": 0.01,
                     "seconds": epoch_seconds, "samples_per_s": samples_per_s,
                     "train_seconds_total": epoch_seconds * (e + 1),
                     "val_loss": 1.6 / (e + 1) + 0.02 * ranks, "val_accuracy": 0.45 + 0.1 * e}
            epochs.append(epoch)
            f.write(json.dumps({"type": "epoch", **epoch}, separators=(",", ":")) + "\n")
        f.write(json.dumps({"type": "test", "loss": 0.55, "accuracy": 0.8 + 0.01 * ranks, "samples": 1000},
                           separators=(",", ":")) + "\n")
    per_rank = [1.0] * ranks
    phase_ms = {"data": 2.0, "forward": 10.0 / ranks, "backward": 20.0 / ranks,
                "comm_exposed": 0.0 if ranks == 1 else 1.5 * ranks + rep, "optimizer": 1.0}
    time_per_step = {p: spread([phase_ms[p]] * ranks) for p in PHASES}
    time_per_step["total_mean"] = sum(phase_ms.values())
    time_per_step["comm_total"] = spread([0.0 if ranks == 1 else 3.0] * ranks)
    report = {
        "format": "hpctrain-report", "format_version": 1, "hpctrain_version": "0.1.0",
        "software": {"libtorch": "2.5.1", "mpi": "Open MPI v4.1.6 (MPI 3.1)", "hdf5": "1.14.3 (parallel)",
                     "cuda_compiled": False, "nccl_compiled": False},
        "started": "2025-01-01T00:00:00Z", "finished": "2025-01-01T00:01:00Z",
        "config_file": "configs/fashion_mnist_cnn.json", "overrides": [f"run.dir={run_dir}"],
        "world": {"size": ranks, "nodes": nodes, "hostname_rank0": "node0", "device": "cpu", "threads_per_rank": 1,
                  "node_of_rank": [r * nodes // ranks for r in range(ranks)], "launcher": "mpirun",
                  "launch_environment": {"OMPI_COMM_WORLD_SIZE": str(ranks)}},
        "data": {"path": "data/fashion-mnist.h5", "name": "fashion-mnist", "task": "classification",
                 "num_classes": 10, "class_names": [], "train_samples": 54000, "validation_samples": 6000,
                 "test_samples": 1000, "normalization_mean": [72.9], "normalization_std": [90.0],
                 "hashes_verified": True, "shard_read_seconds": spread(per_rank),
                 "hash_verify_seconds": spread(per_rank), "bytes_read": spread([1e6] * ranks)},
        "model": {"name": "cnn", "parameters": 1000, "gradient_buckets": 1, "bucket_mb": 25},
        "communication": {"overlap": ranks > 1, "gradient_bytes_per_step": 4000,
                          "bytes_reduced": spread([0 if ranks == 1 else 4000 * steps] * ranks),
                          "exposed_share_of_step": phase_ms["comm_exposed"] / sum(phase_ms.values())},
        "training": {"epochs_run": EPOCHS, "steps": steps, "global_batch": GLOBAL_BATCH, "samples": samples,
                     "stop_reason": "completed", "train_seconds": train_seconds, "samples_per_s": samples_per_s,
                     "samples_per_s_per_rank": spread([samples_per_s / ranks] * ranks), "checkpoints": 0,
                     "checkpoint_seconds": 0, "resumed_from": None, "total_seconds": train_seconds + 1},
        "epochs": epochs,
        "final": {"train_loss": epochs[-1]["train_loss"], "train_accuracy": epochs[-1]["train_accuracy"],
                  "val_loss": epochs[-1]["val_loss"], "val_accuracy": epochs[-1]["val_accuracy"],
                  "test_loss": 0.55, "test_accuracy": 0.8 + 0.01 * ranks, "test_samples": 1000,
                  "test_confusion": [[100 if i == j else 0 for j in range(10)] for i in range(10)]},
        "time_per_step_ms": time_per_step,
        "time_total_s": {**{p: spread([phase_ms[p] * steps / 1000] * ranks) for p in PHASES},
                         "eval": spread([0.5] * ranks), "comm_total": spread([0.0] * ranks)},
        "memory": {"peak_rss_bytes": spread([3e8] * ranks)},
        "system": {"load_average_1min": spread([1.0] * ranks)},
    }
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def scaling(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True, timeout=300)


def read_csv(path):
    with open(path, newline="") as f:
        return {int(row["ranks"]): row for row in csv.DictReader(f)}


def close(a, b):
    return abs(a - b) <= 1e-9


def median(pair):
    return (pair[0] + pair[1]) / 2


c = Checks()
tmp = tempfile.mkdtemp(prefix="hpctrain_scaling_")
root = os.path.join(tmp, "study")
for (ranks, nodes), reps in THROUGHPUT.items():
    for rep, sps in enumerate(reps):
        write_run(os.path.join(root, f"{ranks}r-{rep}"), ranks, nodes, sps, rep)
# a run that failed: config.json and a partial metrics.jsonl, no report.json
failed = os.path.join(root, "8r-0")
os.makedirs(failed)
with open(os.path.join(failed, "metrics.jsonl"), "w") as f:
    f.write('{"type":"step","step":10,"epoch":0,"loss":2.1,"lr":0.01,"samples_per_s":5000.0,"elapsed_s":0.1}\n')

# --- default output folder: ROOT/analysis -------------------------------------------------
p = scaling(root)
c.check("scaling exits 0", p.returncode == 0, p.stdout + p.stderr)
out = os.path.join(root, "analysis")
csv_path = os.path.join(out, "scaling.csv")
c.check("scaling.csv written into ROOT/analysis", os.path.isfile(csv_path), p.stdout + p.stderr)
rows = read_csv(csv_path) if os.path.isfile(csv_path) else {}
c.check("one CSV row per rank count", sorted(rows) == [1, 2, 4], rows)

base = median(THROUGHPUT[(1, 1)])  # 1050
expected = {1: (1.0, 1.0),
            2: (median(THROUGHPUT[(2, 1)]) / base, median(THROUGHPUT[(2, 1)]) / base / 2),
            4: (median(THROUGHPUT[(4, 2)]) / base, median(THROUGHPUT[(4, 2)]) / base / 4)}
for (ranks, nodes), reps in THROUGHPUT.items():
    row = rows.get(ranks)
    if row is None:
        continue
    s, e = expected[ranks]
    c.check(f"{ranks} ranks: speed-up {s:.6f} and efficiency {e:.6f}",
            close(float(row["speedup"]), s) and close(float(row["efficiency"]), e), row)
    c.check(f"{ranks} ranks: repetitions, nodes, samples/s median/min/max",
            row["repetitions"] == "2" and int(row["nodes"]) == nodes and
            close(float(row["samples_per_s_median"]), median(reps)) and
            close(float(row["samples_per_s_min"]), min(reps)) and close(float(row["samples_per_s_max"]), max(reps)),
            row)
    train_s = median([STEPS_PER_EPOCH * EPOCHS * GLOBAL_BATCH / v for v in reps])
    comm = 0.0 if ranks == 1 else 1.5 * ranks + 0.5  # repetitions 0 and 1 add 0 and 1
    c.check(f"{ranks} ranks: train seconds and phase medians",
            close(float(row["train_seconds_median"]), train_s) and close(float(row["data_ms_median"]), 2.0) and
            close(float(row["forward_ms_median"]), 10.0 / ranks) and
            close(float(row["backward_ms_median"]), 20.0 / ranks) and
            close(float(row["comm_exposed_ms_median"]), comm) and close(float(row["optimizer_ms_median"]), 1.0),
            row)
    c.check(f"{ranks} ranks: final test accuracy",
            close(float(row.get("final_test_accuracy_median") or "nan"), 0.8 + 0.01 * ranks), row)

for name in ("speedup.png", "efficiency.png", "phases.png", "learning_curves.png"):
    path = os.path.join(out, name)
    ok = os.path.isfile(path) and os.path.getsize(path) > len(PNG_SIGNATURE)
    head = open(path, "rb").read(8) if ok else b""
    c.check(f"{name} is a non-empty PNG", ok and head == PNG_SIGNATURE, f"{path}: {head!r}")

md_path = os.path.join(out, "scaling.md")
md = open(md_path).read() if os.path.isfile(md_path) else ""
header = "| ranks | nodes | runs | samples/s median |"
c.check("scaling.md holds the table", header in md and "| 2 | 1 | 2 | 1850.0 | 1800.0–1900.0 | 1.762 | 0.881 |" in md
        and "| 4 | 2 | 2 | 3200.0 | 3000.0–3400.0 | 3.048 | 0.762 |" in md, md)
c.check("scaling.md names the baseline and the definitions",
        "Baseline: 1 rank on 1 node" in md and "Speed-up S(N)" in md and "E(N) = S(N) / (N / 1)" in md, md)
c.check("scaling.md links the four plots",
        all(f"({n})" in md for n in ("speedup.png", "efficiency.png", "phases.png", "learning_curves.png")), md)
c.check("scaling.md counts the incomplete run", "1 run directory had metrics.jsonl but no report.json" in md, md)
c.check("the table is printed", header in p.stdout and "| 1 | 1 | 2 | 1050.0 |" in p.stdout, p.stdout)

# --- --baseline and --out ----------------------------------------------------------------
out2 = os.path.join(tmp, "out-baseline")
p = scaling(root, "--baseline", "2", "--out", out2)
rows = read_csv(os.path.join(out2, "scaling.csv")) if p.returncode == 0 else {}
b2 = median(THROUGHPUT[(2, 1)])
c.check("--baseline 2: speed-up and efficiency against 2 ranks",
        sorted(rows) == [1, 2, 4] and
        close(float(rows[1]["speedup"]), base / b2) and close(float(rows[1]["efficiency"]), base / b2 / 0.5) and
        close(float(rows[2]["speedup"]), 1.0) and close(float(rows[2]["efficiency"]), 1.0) and
        close(float(rows[4]["speedup"]), median(THROUGHPUT[(4, 2)]) / b2) and
        close(float(rows[4]["efficiency"]), median(THROUGHPUT[(4, 2)]) / b2 / 2), p.stdout + p.stderr + str(rows))
# run directories given one by one, --out chosen
p = scaling(os.path.join(root, "1r-0"), os.path.join(root, "4r-1"), "--out", os.path.join(tmp, "out-dirs"))
rows = read_csv(os.path.join(tmp, "out-dirs", "scaling.csv")) if p.returncode == 0 else {}
c.check("run directories as arguments", sorted(rows) == [1, 4] and rows[1]["repetitions"] == "1" and
        close(float(rows[4]["speedup"]), 3400.0 / 1000.0) and close(float(rows[4]["efficiency"]), 3.4 / 4),
        p.stdout + p.stderr + str(rows))
p = scaling(root, "--baseline", "3", "--out", os.path.join(tmp, "out-bad"))
c.check("--baseline absent from the study exits 2", p.returncode == 2 and "--baseline 3" in p.stderr, p.stderr)


# --- bad input ------------------------------------------------------------------------------
def bad_case(name, expect_rc, expect_texts, path):
    p = scaling(path, "--out", os.path.join(tmp, "out-" + name.replace(" ", "-")))
    c.check(f"{name}: exit {expect_rc}, message names {', '.join(expect_texts)}",
            p.returncode == expect_rc and all(t in p.stderr for t in expect_texts) and
            "Traceback" not in p.stderr and p.stderr.startswith("scaling: "), f"rc={p.returncode}\n{p.stderr}")


empty = os.path.join(tmp, "empty")
os.makedirs(empty)
bad_case("empty folder", 2, [empty, "no report.json found"], empty)

broken = os.path.join(tmp, "broken")
write_run(os.path.join(broken, "1r-0"), 1, 1, 1000.0, 0)
write_run(os.path.join(broken, "2r-0"), 2, 1, 1800.0, 0)
broken_report = os.path.join(broken, "2r-0", "report.json")
with open(broken_report, "w") as f:
    f.write('{"format": "hpctrain-report", "world": {"size": 2,')
bad_case("report.json not valid JSON", 2, [broken_report, "not valid JSON"], broken)

lacking = os.path.join(tmp, "lacking")
report = write_run(os.path.join(lacking, "2r-0"), 2, 1, 1800.0, 0)
del report["training"]["samples_per_s"]
lacking_report = os.path.join(lacking, "2r-0", "report.json")
json.dump(report, open(lacking_report, "w"), indent=2)
bad_case("report.json without the throughput", 2, [lacking_report, "training.samples_per_s"], lacking)

bad_case("a path that does not exist", 2, [os.path.join(tmp, "nowhere")], os.path.join(tmp, "nowhere"))
c.finish()
