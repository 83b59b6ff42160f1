"""analysis/plot_run.py on a run directory made here, and jobs/submit.py's checks and
dry run."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import SOURCE, Checks  # noqa: E402

c = Checks()
run = tempfile.mkdtemp(prefix="hpctrain_plot_")
with open(os.path.join(run, "metrics.jsonl"), "w") as f:
    for s in range(1, 5):
        f.write(json.dumps({"type": "step", "step": s * 10, "epoch": 0, "loss": 1.0 / s, "lr": 0.1,
                            "samples_per_s": 100.0, "elapsed_s": s}) + "\n")
    for e in range(2):
        f.write(json.dumps({"type": "epoch", "epoch": e, "train_loss": 0.5 - e * 0.1, "train_accuracy": 0.8 + e * 0.05,
                            "val_loss": 0.6, "val_accuracy": 0.79, "lr": 0.1, "seconds": 3.0,
                            "samples_per_s": 1234.0, "train_seconds_total": 3.0 * (e + 1)}) + "\n")
phases = {p: {"min": 1.0, "mean": 2.5, "max": 3.0} for p in ("data", "forward", "backward", "comm_exposed", "optimizer")}
phases["total_mean"] = 12.5
json.dump({"world": {"size": 3}, "training": {"samples_per_s": 4321.0}, "final": {"test_accuracy": 0.9123},
           "time_per_step_ms": phases}, open(os.path.join(run, "report.json"), "w"))

out = os.path.join(run, "plots")
p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "plot_run.py"), run, "--out", out],
                   capture_output=True, text=True)
c.check("plot_run exits 0", p.returncode == 0, p.stdout + p.stderr)
for name in ("learning_curves.png", "step_time.png", "summary.md"):
    path = os.path.join(out, name)
    c.check(f"{name} written", os.path.isfile(path) and os.path.getsize(path) > 100, path)
if os.path.isfile(os.path.join(out, "summary.md")):
    text = open(os.path.join(out, "summary.md")).read()
    c.check("summary holds the report's figures", "| 3 | 4321 | 0.9123 | 12.50 |" in text, text)

os.remove(os.path.join(run, "report.json"))
p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "plot_run.py"), run], capture_output=True, text=True)
c.check("a missing report.json is named", p.returncode != 0 and "report.json: missing" in p.stderr, p.stderr)

# The shipped experiment definitions, as jobs/submit.py would submit or run them.
runner = os.path.join(SOURCE, "jobs", "submit.py")


def dry(*args):
    p = subprocess.run([sys.executable, runner] + list(args) + ["--dry-run"], capture_output=True, text=True,
                       cwd=run)
    return p, [line for line in p.stdout.splitlines() if line.startswith("$ ")]


p, lines = dry(os.path.join(SOURCE, "jobs", "fashion_mnist_scaling.json"))
jobs = [line for line in lines if " sbatch " in line]
c.check("scaling study: one sbatch per (ranks, repetition), then the analysis after all of them",
        p.returncode == 0 and len(jobs) == 10 and "--ntasks=4" in jobs[8]
        and "--dependency=afterany:1001:1002:1003:1004:1005:1006:1007:1008:1009" in jobs[9]
        and "analysis/scaling.py" in jobs[9], p.stdout + p.stderr)
p, lines = dry(os.path.join(SOURCE, "jobs", "fashion_mnist_scaling.json"), "--local")
c.check("scaling study --local: one mpirun per run, then the analysis",
        p.returncode == 0 and sum("mpirun -np" in line for line in lines) == 9 and "scaling.py" in lines[-1],
        p.stdout + p.stderr)
p, lines = dry(os.path.join(SOURCE, "jobs", "fashion_mnist_nodes.json"))
c.check("node scaling: --nodes with the GPU script",
        p.returncode == 0 and "--nodes=8" in lines[-2] and "train-gpu.sbatch" in lines[-2], p.stdout + p.stderr)
p, lines = dry(os.path.join(SOURCE, "jobs", "fashion_mnist_sweep.json"))
c.check("sweep: a job array, then the merge after the whole array",
        p.returncode == 0 and len(lines) == 2 and "--array=0-3" in lines[0] and "search-array.sbatch" in lines[0]
        and "--dependency=afterany:1001" in lines[1] and "search-merge.sbatch" in lines[1], p.stdout + p.stderr)
bad = os.path.join(run, "bad.json")
json.dump({"name": "x", "kind": "scaling", "config": "configs/fashion_mnist_cnn.json", "ranks": [1], "rankz": [2]},
          open(bad, "w"))
p, _ = dry(bad)
c.check("a bad definition names the key", p.returncode != 0 and 'unknown key "rankz"' in p.stderr, p.stderr)
c.finish()
