"""Turns an experiment definition from jobs/ into Slurm submissions, or runs it here.

    python jobs/submit.py DEFINITION.json [--local] [--dry-run] [--out DIR] [key.path=value ...]

Two kinds of definition (docs/cluster.md describes every key):
  scaling  one config trained on several rank (or node) counts, each repeated; one sbatch job
           per run, then an analysis job (--dependency=afterany on all of them) that runs
           analysis/scaling.py: speed-up, parallel efficiency, step-time split, learning curves.
           "mode": "strong" keeps the global batch (global_batch, else the config's), "weak"
           the per-rank batch (batch_per_rank x ranks). With "model" (node studies), a bench
           allreduce job across bench_nodes nodes, and the analysis job first predicts every
           size and predict_nodes with `hpctrain plan --nodes` (the smallest size's run as the
           profile) and plots the predictions beside the measurements.
  sweep    a grid or random search split over a job array (slurm/search-array.sbatch), then
           a merge job (--dependency=afterany on the array) that writes one leaderboard.
--local runs the same thing on this machine through mpirun, one run after another.
--dry-run prints the commands without running or submitting anything. Extra key=value
arguments are added to every training run. Runs go to DIR (default runs/<name>); the job ids
of a submission are written to DIR/submission.json.
"""
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = {"name": str, "kind": str, "description": str, "config": str, "overrides": list, "slurm": dict}
KINDS = {
    "scaling": {"ranks": list, "nodes": list, "ranks_per_node": int, "repetitions": int, "mode": str,
                "global_batch": int, "batch_per_rank": int, "model": dict},
    "sweep": {"shards": int, "ranks": int},
}
SLURM_KEYS = {"script": str, "options": list, "serialize": bool, "analysis_options": list}
MODEL_KEYS = {"bench_nodes": int, "predict_nodes": list}
# The bench allreduce sizes of a model's link fit: the plan fits near the run's bucket size.
BENCH_BYTES = ("65536", str(256 << 20))


def fail(path, message):
    sys.exit(f"submit: {path}: {message}")


def load(path):
    try:
        with open(path) as f:
            spec = json.load(f)
    except OSError as e:
        fail(path, f"cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        fail(path, f"not JSON: {e}")
    if not isinstance(spec, dict):
        fail(path, "expected a JSON object")
    kind = spec.get("kind")
    if kind not in KINDS:
        fail(path, f"kind: expected one of {', '.join(KINDS)}, found {json.dumps(kind)}")
    known = dict(COMMON, **KINDS[kind])
    for key, value in spec.items():
        if key not in known:
            fail(path, f"unknown key \"{key}\" for a {kind} definition (known: {', '.join(known)})")
        if not isinstance(value, known[key]) or isinstance(value, bool) and known[key] is int:
            fail(path, f"{key}: expected {known[key].__name__}, found {json.dumps(value)}")
    for key in ("name", "config"):
        if key not in spec:
            fail(path, f"missing key \"{key}\"")
    if not spec["name"].replace("_", "").replace("-", "").isalnum():
        fail(path, "name: letters, digits, - and _ only (it names the run folder and the jobs)")
    config = spec["config"] if os.path.isabs(spec["config"]) else os.path.join(ROOT, spec["config"])
    if not os.path.isfile(config):
        fail(path, f"config: {spec['config']} does not exist")
    spec["config"] = config
    if not all(isinstance(o, str) and "=" in o for o in spec.get("overrides", [])):
        fail(path, "overrides: expected strings of the form key.path=value")
    slurm = spec.setdefault("slurm", {})
    for key, value in slurm.items():
        if key not in SLURM_KEYS:
            fail(path, f"slurm: unknown key \"{key}\" (known: {', '.join(SLURM_KEYS)})")
        if not isinstance(value, SLURM_KEYS[key]):
            fail(path, f"slurm.{key}: expected {SLURM_KEYS[key].__name__}")
    if kind == "scaling":
        has_ranks, has_nodes = "ranks" in spec, "nodes" in spec
        if has_ranks == has_nodes:
            fail(path, "a scaling study lists either \"ranks\" (one node) or \"nodes\" (with ranks_per_node)")
        sizes = spec["ranks"] if has_ranks else spec["nodes"]
        if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
            fail(path, f"{'ranks' if has_ranks else 'nodes'}: expected a list of positive integers")
        if spec.setdefault("repetitions", 1) < 1:
            fail(path, "repetitions: expected >= 1")
        if spec.setdefault("ranks_per_node", 1) < 1:
            fail(path, "ranks_per_node: expected >= 1")
        check_batch_and_model(path, spec, has_nodes)
    else:
        if spec.setdefault("shards", 2) < 1 or spec.setdefault("ranks", 1) < 1:
            fail(path, "shards and ranks: expected >= 1")
    return spec


def check_batch_and_model(path, spec, has_nodes):
    mode = spec.setdefault("mode", "strong")
    if mode not in ("strong", "weak"):
        fail(path, f"mode: expected \"strong\" (fixed global batch) or \"weak\" (fixed per-rank batch), found "
                   f"{json.dumps(mode)}")
    wrong = "global_batch" if mode == "weak" else "batch_per_rank"
    if wrong in spec:
        fail(path, f"{wrong}: not for a {mode} study (strong: global_batch, weak: batch_per_rank)")
    if mode == "weak" and "batch_per_rank" not in spec:
        fail(path, "a weak study needs batch_per_rank (each run trains on batch_per_rank x ranks)")
    for key in ("global_batch", "batch_per_rank"):
        if key in spec and spec[key] < 1:
            fail(path, f"{key}: expected >= 1")
    if "model" not in spec:
        return
    if not has_nodes:
        fail(path, "model: needs a study over \"nodes\" (the plan predicts node counts)")
    model = spec["model"]
    for key, value in model.items():
        if key not in MODEL_KEYS:
            fail(path, f"model: unknown key \"{key}\" (known: {', '.join(MODEL_KEYS)})")
        if not isinstance(value, MODEL_KEYS[key]) or isinstance(value, bool):
            fail(path, f"model.{key}: expected {MODEL_KEYS[key].__name__}")
    model.setdefault("bench_nodes", min(2, max(spec["nodes"])))
    model.setdefault("predict_nodes", [1 << i for i in range(8)])
    if model["bench_nodes"] < 1 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                           for n in model["predict_nodes"]):
        fail(path, "model: bench_nodes and predict_nodes: expected positive integers")


class Runner:
    def __init__(self, dry):
        self.dry = dry

    def show(self, cmd, env=None):
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
        print("$ " + prefix + " ".join(shlex.quote(c) for c in cmd), flush=True)

    def call(self, cmd, env=None, what=""):
        self.show(cmd, env)
        if self.dry:
            return 0
        rc = subprocess.call(cmd, env=dict(os.environ, **(env or {})))
        if rc != 0:
            sys.exit(f"submit: {what or cmd[0]} failed with exit code {rc}")
        return rc

    def sbatch(self, args, env=None, fake_id=[1000]):
        cmd = ["sbatch", "--parsable"] + args
        self.show(cmd, env)
        if self.dry:
            fake_id[0] += 1
            return str(fake_id[0])
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
        if p.returncode != 0:
            sys.exit(f"submit: sbatch failed (exit code {p.returncode}): {p.stderr.strip()}")
        return p.stdout.strip().split(";")[0]


def batch(spec, ranks):
    """The batch override of one run: strong keeps the global batch, weak the per-rank batch."""
    if spec["mode"] == "weak":
        return [f"train.batch_size={spec['batch_per_rank'] * ranks}"]
    return [f"train.batch_size={spec['global_batch']}"] if "global_batch" in spec else []


def model_commands(spec, out, extra, binary, python):
    """The bench allreduce arguments and the analysis's shell line with the plan before it."""
    bench_json = os.path.join(out, "bench-allreduce.json")
    bench = [binary, "bench", "allreduce", "--min-bytes", BENCH_BYTES[0], "--max-bytes", BENCH_BYTES[1], "--json",
             bench_json]
    first = min(spec["nodes"])
    profile = os.path.join(out, f"{first}n-0", "report.json")
    plan_json = os.path.join(out, "analysis", "plan.json")
    nodes = sorted(set(spec["nodes"]) | set(spec["model"]["predict_nodes"]))
    plan = ([binary, "plan", spec["config"]] + spec.get("overrides", []) +
            batch(spec, first * spec["ranks_per_node"]) + extra +
            ["--profile", profile, "--nodes", ",".join(map(str, nodes)), "--ranks-per-node",
             str(spec["ranks_per_node"]), "--inter", bench_json, "--json", plan_json] +
            (["--weak"] if spec["mode"] == "weak" else []))
    analysis = [python, os.path.join(ROOT, "analysis", "scaling.py"), out, "--out", os.path.join(out, "analysis")]
    # The plan may fail (its profile run or the bench failed): the measured analysis still runs.
    line = (f"mkdir -p {shlex.quote(os.path.join(out, 'analysis'))}; {shlex.join(plan)}; "
            f"if [ -f {shlex.quote(plan_json)} ]; then {shlex.join(analysis + ['--plan', plan_json])}; "
            f"else {shlex.join(analysis)}; fi")
    return bench, line


def mpirun(ranks):
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + root


def scaling(spec, out, extra, local, run):
    binary = os.environ.get("HPCTRAIN", os.path.join(ROOT, "build", "hpctrain"))
    by_nodes = "nodes" in spec
    sizes = spec["nodes"] if by_nodes else spec["ranks"]
    options = spec["slurm"].get("options", [])
    script = os.path.join(ROOT, spec["slurm"].get("script", "slurm/train-gpu.sbatch" if by_nodes else
                                                 "slurm/train-cpu.sbatch"))
    env = {"HPCTRAIN_HOME": ROOT}
    ids = []
    runs = []
    for size in sizes:
        ranks = size * spec["ranks_per_node"] if by_nodes else size
        for rep in range(spec["repetitions"]):
            tag = f"{size}n-{rep}" if by_nodes else f"{size}r-{rep}"
            run_dir = os.path.join(out, tag)
            runs.append(run_dir)
            train = [spec["config"], "run.dir=" + run_dir] + spec.get("overrides", []) + batch(spec, ranks) + extra
            if local:
                run.call(mpirun(ranks) + [binary, "train"] + train, what=run_dir)
                continue
            shape = ([f"--nodes={size}", f"--ntasks-per-node={spec['ranks_per_node']}"] if by_nodes else
                     ["--nodes=1", f"--ntasks={size}"])
            dep = [f"--dependency=afterany:{ids[-1]}"] if spec["slurm"].get("serialize") and ids else []
            ids.append(run.sbatch([f"--job-name={spec['name']}-{tag}", f"--output={run_dir}.out"] + shape + dep +
                                  options + [script] + train, env))
    python = os.path.join(ROOT, ".venv", "bin", "python")
    python = python if os.path.isfile(python) else sys.executable
    analysis = shlex.join([python, os.path.join(ROOT, "analysis", "scaling.py"), out, "--out",
                           os.path.join(out, "analysis")])
    submitted = {"runs": dict(zip(runs, ids))}
    if "model" in spec:
        bench, analysis = model_commands(spec, out, extra, binary, python)
        per_node, bench_nodes = spec["ranks_per_node"], spec["model"]["bench_nodes"]
        if local:
            run.call(mpirun(bench_nodes * per_node) + bench, what="bench allreduce")
        else:
            dep = [f"--dependency=afterany:{ids[-1]}"] if spec["slurm"].get("serialize") and ids else []
            ids.append(run.sbatch([f"--job-name={spec['name']}-bench", f"--output={out}/bench-allreduce-%j.out",
                                   f"--nodes={bench_nodes}", f"--ntasks-per-node={per_node}"] + dep + options +
                                  [os.path.join(ROOT, "slurm", "bench-allreduce.sbatch")] + bench[3:], env))
            submitted["bench"] = ids[-1]
    if local:
        run.call(["sh", "-c", analysis], what="analysis")
        return {}
    submitted["analysis"] = run.sbatch([f"--job-name={spec['name']}-analysis", "--dependency=afterany:" +
                                        ":".join(ids), "--ntasks=1", f"--output={os.path.join(out, 'analysis')}-%j.out"]
                                       + spec["slurm"].get("analysis_options", []) + ["--wrap", analysis], env)
    return submitted


def sweep(spec, out, extra, local, run):
    binary = os.environ.get("HPCTRAIN", os.path.join(ROOT, "build", "hpctrain"))
    train = [spec["config"]] + spec.get("overrides", []) + extra
    shards = spec["shards"]
    if local:
        for shard in range(shards):
            run.call(mpirun(spec["ranks"]) + [binary, "train"] + train +
                     [f"search.shards={shards}", f"search.shard={shard}", f"run.dir={out}/shard-{shard}"],
                     what=f"shard {shard}")
        run.call([binary, "search-merge", out], what="search-merge")
        return {}
    env = {"HPCTRAIN_HOME": ROOT, "HPCTRAIN_SEARCH_DIR": out, "HPCTRAIN_MERGE": "0"}
    array = run.sbatch([f"--job-name={spec['name']}", f"--array=0-{shards - 1}", f"--ntasks={spec['ranks']}",
                        f"--output={out}/shard-%a.out"] + spec["slurm"].get("options", []) +
                       [os.path.join(ROOT, spec["slurm"].get("script", "slurm/search-array.sbatch"))] + train, env)
    merge = run.sbatch([f"--job-name={spec['name']}-merge", f"--dependency=afterany:{array}", "--ntasks=1",
                        f"--output={out}/merge-%j.out"] + spec["slurm"].get("analysis_options", []) +
                       [os.path.join(ROOT, "slurm", "search-merge.sbatch"), out], env)
    return {"array": array, "merge": merge}


def main():
    args = sys.argv[1:]
    flags = {"--local", "--dry-run"}
    out = None
    if "--out" in args:
        i = args.index("--out")
        if i + 1 >= len(args):
            sys.exit("submit: --out needs a folder")
        out = args[i + 1]
        del args[i:i + 2]
    positional = [a for a in args if a not in flags]
    if not positional or any(a.startswith("--") for a in positional):
        sys.exit(__doc__)
    spec = load(positional[0])
    extra = positional[1:]
    if not all("=" in e for e in extra):
        sys.exit("submit: extra arguments are config overrides of the form key.path=value")
    local, dry = "--local" in args, "--dry-run" in args
    out = os.path.abspath(out or os.path.join("runs", spec["name"]))
    if not dry:
        os.makedirs(out, exist_ok=True)
    run = Runner(dry)
    ids = (scaling if spec["kind"] == "scaling" else sweep)(spec, out, extra, local, run)
    if ids and not dry:
        with open(os.path.join(out, "submission.json"), "w") as f:
            json.dump({"definition": os.path.abspath(positional[0]), "jobs": ids}, f, indent=1)
        print(f"submitted: job ids in {os.path.join(out, 'submission.json')}; results in {out}")


if __name__ == "__main__":
    main()
