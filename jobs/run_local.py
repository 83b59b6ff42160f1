"""Runs an experiment definition from jobs/ on this machine through mpirun, then plots it.

    python jobs/run_local.py jobs/fashion_mnist_ranks.json [--dry-run] [key.path=value ...]

A definition names a config, rank counts, repetitions and overrides; each (ranks,
repetition) trains into runs/<name>/<ranks>r-<rep>, and analysis/plot_run.py summarizes
them all into runs/<name>/analysis. Extra key=value arguments are added to every run."""
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"name": str, "description": str, "config": str, "ranks": list, "repetitions": int, "overrides": list}


def load(path):
    try:
        spec = json.load(open(path))
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"run_local: {path}: {e}")
    for key in spec:
        if key not in KEYS:
            sys.exit(f"run_local: {path}: unknown key \"{key}\" (known: {', '.join(KEYS)})")
    for key, kind in KEYS.items():
        if key not in spec and key != "description":
            sys.exit(f"run_local: {path}: missing key \"{key}\"")
        if key in spec and not isinstance(spec[key], kind):
            sys.exit(f"run_local: {path}: {key}: expected {kind.__name__}")
    if not all(isinstance(r, int) and r >= 1 for r in spec["ranks"]) or spec["repetitions"] < 1:
        sys.exit(f"run_local: {path}: ranks must be positive integers and repetitions >= 1")
    if not os.path.isfile(os.path.join(ROOT, spec["config"])):
        sys.exit(f"run_local: {path}: config {spec['config']} does not exist")
    return spec


def main():
    args = [a for a in sys.argv[1:] if a != "--dry-run"]
    dry = "--dry-run" in sys.argv
    if not args:
        sys.exit(__doc__)
    spec = load(args[0])
    extra = args[1:]
    root_flag = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    runs = []
    for ranks in spec["ranks"]:
        for rep in range(spec["repetitions"]):
            run_dir = os.path.join("runs", spec["name"], f"{ranks}r-{rep}")
            cmd = (["mpirun", "-np", str(ranks), "--oversubscribe"] + root_flag +
                   [os.path.join("build", "hpctrain"), "train", spec["config"], "run.dir=" + run_dir] +
                   spec["overrides"] + extra)
            print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            if not dry:
                rc = subprocess.call(cmd, cwd=ROOT)
                if rc != 0:
                    sys.exit(f"run_local: {run_dir} failed with exit code {rc}")
            runs.append(run_dir)
    plot = [sys.executable, os.path.join("analysis", "plot_run.py")] + runs + [
        "--out", os.path.join("runs", spec["name"], "analysis")]
    print("$ " + " ".join(shlex.quote(c) for c in plot), flush=True)
    if not dry:
        sys.exit(subprocess.call(plot, cwd=ROOT))


if __name__ == "__main__":
    main()
