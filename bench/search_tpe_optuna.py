"""hpctrain's TPE (search.method=tpe) against Optuna's TPESampler on the same space, budget and
objective, and asynchronous successive halving against synchronous halving on 2 groups
(docs/benchmarks.md, "Search: TPE against Optuna, ASHA against halving").

TPE part. Objective: the holdout validation accuracy of a Fashion-MNIST MLP trained by hpctrain
(CONFIG with OVERRIDES; every trial scored on the same validation split). Space: optimizer.lr
log-uniform [1e-4, 0.3], model.dropout uniform [0, 0.5], optimizer.name in {sgd, adam, adamw}.
Budget: --trials trials, the first --startup random. For each seed in --seeds:
  hpctrain: hpctrain train CONFIG search.method=tpe search.trials=N search.tpe_startup=S
            search.seed=SEED [--hpctrain-tpe overrides] (one rank: one group, so each proposal
            sees every result before it, as Optuna's sequential study does); its other TPE
            settings are the schema's defaults (search.tpe_multivariate, _gamma, _candidates)
  optuna:   optuna.create_study(direction="maximize", sampler=TPESampler(seed=SEED,
            n_startup_trials=S)); each trial's parameters are scored by the same hpctrain
            code path, a one-trial grid search (search.method=grid, one value per key), so
            only the sampler differs. Its other settings are the defaults; the JSON records the
            ones it resolved (multivariate, gamma, candidates, prior weight).
The figure is each side's best score per seed and their medians over the seeds. Optuna's side is
deterministic given the seed (two runs gave the same 16 scores for every seed), so --optuna-from
FILE ... takes its scores from earlier results of this script with the same space, budget and
overrides instead of training them again; seeds not found there are run. Since a change to
hpctrain's training (kernels, data order) changes the objective itself, every run first scores one
fixed trial (objective_probe: lr 1e-3, dropout 0.1, adam) with --bin, and scores are reused only
from files whose probe is the same number.

ASHA part. mpirun -np 2 hpctrain train CONFIG search.method=asha|halving (2 groups of 1 rank),
the same search.trials random draws, eta and rungs; wall time of the search (search_report.json
wall_seconds) and the best score, alternating the two methods, --repeats times; medians.

Usage: .venv/bin/python bench/search_tpe_optuna.py [--seeds 0 1 2 3 4] [--trials 12] [--startup 4]
       [--repeats 2] [--bin build/hpctrain] [--hpctrain-tpe KEY=VALUE ...] [--optuna-from FILE ...]
       [--skip-tpe] [--skip-asha] [--summarize FILE ...]
       [--asha-space JSON] [--asha-trials 8] [--asha-epochs 4] [--asha-eta 2] [--out FILE.json] [overrides ...]"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, provenance, wait_for_quiet  # noqa: E402

BIN = os.path.join(ROOT, "build", "hpctrain")
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_cnn.json")
SPACE = {"optimizer.lr": {"log_uniform": [1e-4, 0.3]}, "model.dropout": {"uniform": [0.0, 0.5]},
         "optimizer.name": ["sgd", "adam", "adamw"]}
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def hpctrain(args, np_=1):
    out = tempfile.mkdtemp(prefix="hpctrain_searchbench_")
    cmd = [BIN, "train", CONFIG, *args, "run.progress=none", "run.dir=" + out]
    if np_ > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(np_)] + cmd
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV)
    wall = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + p.stdout[-2000:] + p.stderr[-2000:])
    return json.load(open(os.path.join(out, "search_report.json"))), wall, " ".join(cmd)


def best_of(report):
    means = [b["mean"] for b in report["leaderboard"] if b["mean"] is not None]
    return max(means) if means else float("nan")


def score_one(values, a):
    """One trial's score through hpctrain, a one-trial grid search: Optuna's objective."""
    report, _, _ = hpctrain([*a.overrides, "search.method=grid",
                             "search.space=" + json.dumps({k: [v] for k, v in values.items()})])
    score = report["leaderboard"][0]["mean"]
    return score if score is not None else 0.0


PROBE = {"optimizer.lr": 1e-3, "model.dropout": 0.1, "optimizer.name": "adam"}


def optuna_side(seed, a):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=a.startup))

    def objective(trial):
        return score_one({"optimizer.lr": trial.suggest_float("optimizer.lr", 1e-4, 0.3, log=True),
                          "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5),
                          "optimizer.name": trial.suggest_categorical("optimizer.name", ["sgd", "adam", "adamw"])}, a)

    study.optimize(objective, n_trials=a.trials)
    sampler = study.sampler
    settings = {"optuna": optuna.__version__, "multivariate": sampler._is_multivariate(study),
                "n_startup_trials": sampler._n_startup_trials, "n_ei_candidates": sampler._n_ei_candidates,
                "gamma": "min(ceil(0.1 n), 25)" if sampler._gamma is optuna.samplers._tpe.sampler.default_gamma
                else repr(sampler._gamma),
                "parzen_estimator": repr(sampler._parzen_estimator_parameters),
                "constant_liar": sampler._constant_liar}
    return study.best_value, [t.value for t in study.trials], settings


def earlier_optuna(files, a, probe):
    """seed -> (best, scores, settings, file) from earlier results with this run's space, budget, overrides
    and objective (the probe's score)."""
    found = {}
    for path in files:
        old = json.load(open(path))
        same = (old.get("space") == SPACE and old.get("trials") == a.trials and old.get("startup") == a.startup
                and old.get("overrides") == a.overrides)
        if not same:
            sys.exit(f"{path}: another space, budget or overrides than this run; its Optuna scores do not apply")
        if old.get("objective_probe") != probe:
            sys.exit(f"{path}: its objective_probe {old.get('objective_probe')} is not this binary's {probe}: "
                     "training changed since, so its Optuna scores do not apply")
        for r in old.get("tpe", []):
            found.setdefault(r["seed"], (r["optuna_best"], r["optuna_scores"], old.get("optuna_settings"),
                                         os.path.relpath(path, ROOT)))
    return found


def summarize(files):
    """Per results file: both sides' median best over its seeds, the seeds where hpctrain's best is
    above, equal to and below Optuna's, the Wilcoxon signed-rank test's two-sided p on the paired
    bests, and a bootstrap 95% interval (seeds resampled, 10000 draws, fixed seed) of the
    difference of the medians."""
    import numpy as np
    from scipy.stats import wilcoxon
    for path in files:
        r = json.load(open(path))
        ours = np.array([t["hpctrain_best"] for t in r["tpe"]])
        theirs = np.array([t["optuna_best"] for t in r["tpe"]])
        rng = np.random.default_rng(0)
        draws = rng.integers(0, len(ours), size=(10000, len(ours)))
        diff = np.median(ours[draws], axis=1) - np.median(theirs[draws], axis=1)
        p = wilcoxon(ours, theirs).pvalue if np.any(ours != theirs) else 1.0
        print(f"{os.path.relpath(path, ROOT)} ({len(ours)} seeds; {' '.join(r.get('hpctrain_tpe_overrides') or [])}"
              f"{'; ' + r['note'] if r.get('note') else ''})\n"
              f"  median best: hpctrain {np.median(ours):.6f}, Optuna {np.median(theirs):.6f}; "
              f"hpctrain above / equal / below: {int(np.sum(ours > theirs))} / {int(np.sum(ours == theirs))} / "
              f"{int(np.sum(ours < theirs))}; mean {ours.mean():.6f} against {theirs.mean():.6f}\n"
              f"  Wilcoxon signed-rank p = {p:.3f}; median difference {np.median(ours) - np.median(theirs):+.6f}, "
              f"bootstrap 95% [{np.percentile(diff, 2.5):+.6f}, {np.percentile(diff, 97.5):+.6f}]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--startup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--out", default="")
    ap.add_argument("--bin", default="", help="the hpctrain binary (default build/hpctrain)")
    ap.add_argument("--hpctrain-tpe", nargs="*", default=[],
                    help="extra overrides for hpctrain's TPE side (default: none, the schema's defaults)")
    ap.add_argument("--optuna-from", nargs="*", default=[],
                    help="earlier results JSON files whose Optuna scores to reuse for the same seeds")
    ap.add_argument("--skip-asha", action="store_true")
    ap.add_argument("--summarize", nargs="*", default=None, metavar="FILE",
                    help="print the paired statistics of earlier results files and exit")
    ap.add_argument("--asha-space", default=json.dumps({"optimizer.lr": {"log_uniform": [1e-4, 0.3]},
                                                         "model.hidden": [[32], [512]]}),
                    help="search.space of the ASHA part (JSON); trials of uneven cost show what ASHA is for")
    ap.add_argument("--asha-trials", type=int, default=8)
    ap.add_argument("--asha-epochs", type=int, default=4, help="train.epochs (the last rung's epochs)")
    ap.add_argument("--asha-eta", type=int, default=2, help="search.halving_eta")
    ap.add_argument("--skip-tpe", action="store_true")
    ap.add_argument("--note", default="", help="recorded in the JSON: which build --bin is, when not HEAD's")
    ap.add_argument("overrides", nargs="*",
                    default=["data.limit_train=8000", "data.verify_hashes=false", "train.epochs=2",
                             "model.name=mlp", "model.hidden=[64]", "train.batch_size=64", "run.threads=1"])
    a = ap.parse_args()
    if a.summarize is not None:
        return summarize(a.summarize)
    global BIN
    BIN = os.path.abspath(a.bin) if a.bin else BIN
    result = {**provenance(), "note": a.note, "space": SPACE, "trials": a.trials, "startup": a.startup, "overrides": a.overrides,
              "tpe": [], "asha": []}

    if not a.skip_tpe:
        result["objective_probe"] = score_one(PROBE, a)
    reuse = earlier_optuna(a.optuna_from, a, result.get("objective_probe"))
    for seed in [] if a.skip_tpe else a.seeds:
        load = os.getloadavg()[0]  # scores, not times: no wait
        report, wall, cmd = hpctrain([*a.overrides, "search.method=tpe", "search.trials=%d" % a.trials,
                                      "search.tpe_startup=%d" % a.startup, "search.seed=%d" % seed,
                                      "search.space=" + json.dumps(SPACE), *a.hpctrain_tpe])
        ours = best_of(report)
        theirs, values, optuna_settings, source = (*reuse[seed],) if seed in reuse else (*optuna_side(seed, a), None)
        result["optuna_settings"] = optuna_settings or result.get("optuna_settings")
        result["hpctrain_tpe_overrides"] = a.hpctrain_tpe
        result["tpe"].append({"seed": seed, "hpctrain_best": ours, "optuna_best": theirs, "load_before": load,
                              "optuna_scores_from": source,
                              "hpctrain_scores": [b["mean"] for b in sorted(report["leaderboard"],
                                                                            key=lambda b: b["trial"])],
                              "optuna_scores": values, "hpctrain_command": cmd})
        print(f"seed {seed}: best validation accuracy hpctrain TPE {ours:.4f}, Optuna TPE {theirs:.4f}", flush=True)

    asha_args = [*a.overrides, "train.epochs=%d" % a.asha_epochs, "search.trials=%d" % a.asha_trials,
                 "search.halving_eta=%d" % a.asha_eta, "search.halving_min_epochs=1", "search.seed=0",
                 "search.space=" + json.dumps(json.loads(a.asha_space))]
    result["asha_space_and_budget"] = asha_args
    for i in range(0 if a.skip_asha else a.repeats):
        for method in ("asha", "halving"):
            load = wait_for_quiet(a.max_load, 120)
            report, wall, cmd = hpctrain([*asha_args, "search.method=" + method], np_=2)
            result["asha"].append({"repeat": i, "method": method, "wall_seconds": report["wall_seconds"],
                                   "command_seconds": wall, "best": best_of(report), "load_before": load,
                                   "tasks": len(report["tasks"]), "command": cmd})
            print(f"repeat {i} {method}: search {report['wall_seconds']:.2f} s, best {best_of(report):.4f}, "
                  f"{len(report['tasks'])} tasks", flush=True)

    def med(values):
        return statistics.median(values) if values else None

    def of(method, key):
        return [r[key] for r in result["asha"] if r["method"] == method]

    result["figures"] = {
        "tpe_hpctrain_best_median": med([r["hpctrain_best"] for r in result["tpe"]]),
        "tpe_optuna_best_median": med([r["optuna_best"] for r in result["tpe"]]),
        "seeds_hpctrain_at_least_optuna": sum(r["hpctrain_best"] >= r["optuna_best"] for r in result["tpe"]),
        "asha_wall_median": med(of("asha", "wall_seconds")),
        "halving_wall_median": med(of("halving", "wall_seconds")),
        "asha_best_median": med(of("asha", "best")),
        "halving_best_median": med(of("halving", "best")),
        "asha_tasks": of("asha", "tasks"),
        "halving_tasks": of("halving", "tasks"),
    }
    print(json.dumps(result["figures"], indent=2))
    print(f"machine: {result['machine']}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
