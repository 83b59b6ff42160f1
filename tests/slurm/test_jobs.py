"""jobs/submit.py: a scaling study run locally through mpirun over 1, 2 and 4 ranks, whose
analysis writes the table and plots; strong and weak studies over nodes with the performance
model, as the sbatch commands of --dry-run (geometry, batch per run, the bench allreduce job,
the plan and the analysis after all of them); bad definitions are refused with a message
naming the key. With --slurm (the slurm_jobs test): the same tool submits a scaling study and a sweep to
the test cluster, with the analysis and merge jobs depending on the runs."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks  # noqa: E402

c = Checks()
slurm = "--slurm" in sys.argv
SMALL = ["data.path=" + FASHION, "data.limit_train=2000", "data.verify_hashes=false", "train.epochs=1",
         "run.progress=none"]
SUBMIT = os.path.join(SOURCE, "jobs", "submit.py")


def definition(work, **spec):
    path = os.path.join(work, spec["name"] + ".json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def submit(args, work, env=None, timeout=900):
    return subprocess.run([sys.executable, SUBMIT] + args, cwd=work, capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ, HPCTRAIN=BIN))


def check_scaling(out, ranks, label):
    rows = []
    try:
        with open(os.path.join(out, "analysis", "scaling.csv")) as f:
            header = f.readline().strip().split(",")
            rows = [dict(zip(header, line.strip().split(","))) for line in f if line.strip()]
    except OSError as e:
        c.check(f"{label}: scaling.csv written", False, str(e))
        return
    c.check(f"{label}: one row per rank count {ranks}", [int(r["ranks"]) for r in rows] == ranks, str(rows))
    c.check(f"{label}: speed-up 1 at the baseline, efficiency = speed-up / ranks",
            abs(float(rows[0]["speedup"]) - 1) < 1e-9 and all(
                abs(float(r["efficiency"]) - float(r["speedup"]) / int(r["ranks"])) < 1e-6 for r in rows), str(rows))
    pngs = [os.path.join(out, "analysis", p) for p in ("speedup.png", "efficiency.png", "phases.png",
                                                       "learning_curves.png")]
    c.check(f"{label}: speed-up, efficiency, phase and learning-curve plots", all(
        os.path.isfile(p) and open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in pngs), str(pngs))
    c.check(f"{label}: Markdown summary", os.path.isfile(os.path.join(out, "analysis", "scaling.md")))


def check_model_study(work, mode, batch_key, batch_value, batches):
    """--dry-run of a study over 1, 2 and 4 nodes of 4 ranks with "model": the sbatch lines."""
    spec = definition(work, name=f"{mode}_model", kind="scaling", config="configs/fashion_mnist_cnn.json",
                      nodes=[1, 2, 4], ranks_per_node=4, mode=mode, model={},
                      slurm={"options": ["--time=00:10:00"]}, **{batch_key: batch_value})
    p = submit([spec, "--dry-run", "--out", os.path.join(work, mode)], work)
    lines = [line for line in p.stdout.splitlines() if line.startswith("$ ")]
    runs = [line for line in lines if "train-gpu.sbatch" in line]
    c.check(f"{mode}: one job per node count, --nodes=N --ntasks-per-node=4, train.batch_size {batches}",
            p.returncode == 0 and len(runs) == 3 and all(
                f"--nodes={n} --ntasks-per-node=4" in line and f"train.batch_size={b} " in line + " "
                for n, b, line in zip((1, 2, 4), batches, runs)), p.stdout + p.stderr)
    bench = [line for line in lines if "bench-allreduce.sbatch" in line]
    c.check(f"{mode}: a bench allreduce job on 2 nodes of 4 ranks writing bench-allreduce.json",
            len(bench) == 1 and "--nodes=2 --ntasks-per-node=4" in bench[0] and
            f"--json {os.path.join(work, mode, 'bench-allreduce.json')}" in bench[0], "\n".join(lines))
    analysis = lines[-1] if lines else ""
    c.check(f"{mode}: the analysis job after the runs and the bench, with the plan's predictions",
            "--dependency=afterany:1001:1002:1003:1004" in analysis and " plan " in analysis and
            f"--profile {os.path.join(work, mode, '1n-0', 'report.json')}" in analysis and
            "--nodes 1,2,4,8,16,32,64,128 --ranks-per-node 4" in analysis and
            ("--weak" in analysis) == (mode == "weak") and "--plan" in analysis and "scaling.py" in analysis,
            analysis)


work = tempfile.mkdtemp(prefix="hpctrain_jobs_")
if not slurm:
    check_model_study(work, "strong", "global_batch", 256, (256, 256, 256))
    check_model_study(work, "weak", "batch_per_rank", 32, (128, 256, 512))
    spec = definition(work, name="local_scaling", kind="scaling", config="configs/fashion_mnist_fast.json",
                      ranks=[1, 2, 4], repetitions=1, overrides=SMALL)
    p = submit([spec, "--local"], work)
    c.check("a scaling study over 1, 2 and 4 ranks runs locally", p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:])
    out = os.path.join(work, "runs", "local_scaling")
    check_scaling(out, [1, 2, 4], "local")
    for name, bad, needle in (("unknown_key", {"ranks": [1], "rank": 2}, 'unknown key "rank"'),
                              ("no_config", {"ranks": [1], "config": "configs/none.json"}, "does not exist"),
                              ("both_sizes", {"ranks": [1], "nodes": [1]}, "either"),
                              ("bad_ranks", {"ranks": [0]}, "positive integers"),
                              ("bad_mode", {"ranks": [1], "mode": "medium"}, "mode"),
                              ("weak_no_batch", {"ranks": [1], "mode": "weak"}, "batch_per_rank"),
                              ("model_ranks", {"ranks": [1], "model": {}}, "model: needs")):
        spec = dict({"name": name, "kind": "scaling", "config": "configs/fashion_mnist_fast.json"}, **bad)
        p = submit([definition(work, **spec)], work)
        c.check(f"bad definition ({name}) refused naming the problem", p.returncode != 0 and needle in p.stderr,
                p.stderr[-1000:])
else:
    from slurmtest import ENV, wait  # noqa: E402  (needs the test cluster)
    scaling = definition(work, name="cluster_scaling", kind="scaling", config="configs/fashion_mnist_fast.json",
                         ranks=[1, 2], repetitions=1, overrides=SMALL, slurm={"options": ["--cpus-per-task=1"],
                                                                              "serialize": True})
    p = submit([scaling], work, env=ENV)
    c.check("jobs/submit.py submits a scaling study with sbatch", p.returncode == 0, p.stdout + p.stderr)
    out = os.path.join(work, "runs", "cluster_scaling")
    ids = (json.load(open(os.path.join(out, "submission.json"))) if p.returncode == 0 else {}).get("jobs", {})
    if ids:
        states = wait(ids["analysis"], 600)
        c.check("the analysis job ran after the runs and completed",
                states.get(ids["analysis"]) == ("COMPLETED", "0:0"), str(states))
        check_scaling(out, [1, 2], "cluster")
    sweep = definition(work, name="cluster_sweep", kind="sweep", config="configs/fashion_mnist_fast.json", shards=2,
                       ranks=1, overrides=SMALL + ["search.method=grid", 'search.space={"optimizer.lr":[0.05,0.1]}',
                                                   "search.scoring=holdout", "data.val_fraction=0.2"])
    p = submit([sweep], work, env=ENV)
    c.check("jobs/submit.py submits a sweep as a job array and a merge job", p.returncode == 0, p.stdout + p.stderr)
    out = os.path.join(work, "runs", "cluster_sweep")
    ids = (json.load(open(os.path.join(out, "submission.json"))) if p.returncode == 0 else {}).get("jobs", {})
    if ids:
        states = wait(ids["merge"], 600)
        report = os.path.join(out, "search_report.json")
        board = json.load(open(report)).get("leaderboard", []) if os.path.isfile(report) else []
        c.check("the merge job joined both shards into one leaderboard",
                states.get(ids["merge"]) == ("COMPLETED", "0:0") and len(board) == 2
                and all(b["status"] == "ok" for b in board), f"{states}\n{board}")
c.finish()
