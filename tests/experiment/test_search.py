"""Hyperparameter search over rank groups: a grid comparing models and learning rates
(one trial fails and is reported, the others complete), the leaderboard and the best
configuration as a runnable file, the final retrain; then successive halving scored by
2-fold cross-validation; then the searches that decide tasks as groups free up (tpe, asha)
on 2 groups, their recorded arrival order and promotions, and a tpe search resumed from a
cut record that replays it."""
import csv
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, mpirun, run  # noqa: E402

c = Checks()
base = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
common = ["data.path=" + FASHION, "data.limit_train=2000", "data.verify_hashes=false", "train.epochs=1",
          "train.batch_size=64", "run.progress=none"]

# --- grid over a model comparison and two learning rates, holdout scoring -------------
run_dir = tempfile.mkdtemp(prefix="hpctrain_grid_")
space = {"model": [{"name": "mlp", "hidden": [32]}, {"name": "cnn", "channels": [8], "fc_width": 32},
                   {"name": "cnn", "channels": [8, 8, 8, 8, 8]}],
         "optimizer.lr": [0.003, 0.0003]}
r = mpirun(2, ["train", base, *common, "search.method=grid", "search.space=" + json.dumps(space),
               "cv.final_retrain=true", "run.dir=" + run_dir], timeout=900)
c.check("grid search exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(run_dir, "search_report.json")))
board = report["leaderboard"]
c.check("6 trials on the leaderboard", len(board) == 6, json.dumps(board)[:2000])
failed = [b for b in board if b["folds_ok"] == 0]
c.check("the 5-stage CNN trials fail with their error, the others complete",
        len(failed) == 2 and all(b["parameters"]["model"]["channels"] == [8] * 5 for b in failed), json.dumps(failed))
errors = [t["error"] for t in report["tasks"] if t["status"] == "failed"]
c.check("failed trials carry the message", len(errors) == 2 and all("pooling stages" in e for e in errors), str(errors))
ok = [b for b in board if b["folds_ok"] == 1]
c.check("ranked by accuracy, best first, failed last",
        [b["mean"] for b in ok] == sorted([b["mean"] for b in ok], reverse=True) and board[-1]["folds_ok"] == 0
        and board[-2]["folds_ok"] == 0, json.dumps([(b["rank"], b["mean"]) for b in board]))
c.check("leaderboard rows have parameter counts and times",
        all(b["model_parameters"] > 0 and b["summary"]["train_seconds"]["mean"] > 0 for b in ok), "")
rows = list(csv.DictReader(open(os.path.join(run_dir, "leaderboard.csv"))))
c.check("leaderboard.csv", len(rows) == 6 and rows[0]["trial"] == str(board[0]["trial"]), str(rows[:2]))
c.check("leaderboard.md", "| rank | trial |" in open(os.path.join(run_dir, "leaderboard.md")).read(), "")
best = json.load(open(os.path.join(run_dir, "best_config.json")))
c.check("best_config.json holds the best trial's settings",
        best["model"]["name"] == board[0]["parameters"]["model"]["name"]
        and best["optimizer"]["lr"] == board[0]["parameters"]["optimizer.lr"] and best["search"]["method"] == "none",
        json.dumps(best)[:500])
rc = run([BIN, "config", os.path.join(run_dir, "best_config.json")])
c.check("best_config.json is a valid config", rc.rc == 0, rc.text[-1000:])
final = json.load(open(os.path.join(run_dir, "final", "report.json")))
c.check("final retrain on the whole training split, tested once",
        final["data"]["validation_samples"] == 0 and final["data"]["train_samples"] == 2000
        and 0 < final["final"]["test_accuracy"] <= 1, json.dumps(final["data"]))

p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "plot_cv.py"), run_dir], capture_output=True,
                   text=True)
c.check("plot_cv draws the leaderboard", p.returncode == 0 and os.path.getsize(
    os.path.join(run_dir, "analysis", "leaderboard.png")) > 1000, p.stdout + p.stderr)

# --- successive halving, scored by 2-fold cross-validation -----------------------------
run_dir = tempfile.mkdtemp(prefix="hpctrain_halving_")
space = {"optimizer.lr": {"log_uniform": [1e-4, 1e-2]}}
r = mpirun(2, ["train", base, *common, "model.channels=[8]", "model.fc_width=32", "train.epochs=2",
               "search.method=halving", "search.trials=4", "search.space=" + json.dumps(space), "cv.folds=2",
               "run.dir=" + run_dir], timeout=900)
c.check("halving search exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(run_dir, "search_report.json")))
rungs = report["rungs"]
c.check("rungs: 4 trials at 1 epoch, then the better 2 at 2 epochs",
        [len(x["trials"]) for x in rungs] == [4, 2] and [x["epochs"] for x in rungs] == [1, 2], json.dumps(rungs))
first = sorted(rungs[0]["trials"], key=lambda t: -t["score"])
c.check("the better half goes on", sorted(t["trial"] for t in first[:2]) == sorted(t["trial"] for t in rungs[1]["trials"]),
        json.dumps(rungs))
c.check("each rung-0 trial scored over 2 folds",
        sum(1 for t in report["tasks"] if t["rung"] == 0) == 8 and sum(1 for t in report["tasks"] if t["rung"] == 1) == 4,
        "")
c.check("the winner reached the last rung", report["leaderboard"][0]["rung"] == 1, json.dumps(report["leaderboard"][0]))
lrs = [b["parameters"]["optimizer.lr"] for b in report["leaderboard"]]
c.check("log-uniform draws inside the range", all(1e-4 <= x <= 1e-2 for x in lrs) and len(set(lrs)) == 4, str(lrs))

# --- tpe and asha on 2 groups (2 ranks, 1 rank per group), holdout scoring ---------------
small = ["data.path=" + FASHION, "data.limit_train=1000", "data.verify_hashes=false", "train.batch_size=50",
         "run.progress=none", "model.name=mlp", "model.hidden=[16]"]
space = {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "optimizer.name": ["sgd", "adam"]}


def events_of(report, kind):
    return [(e["trial"], e["rung"]) for e in report["events"] if e["event"] == kind]


# One estimator per key (search.tpe_multivariate=false, not the default): the key reaches the
# search, and its proposals replay on resume as the joint ones do (both are unit-tested for
# determinism in test_tpe.cpp; the replay does not depend on the estimator).
run_dir = tempfile.mkdtemp(prefix="hpctrain_tpe_")
tpe = ["train", base, *small, "train.epochs=1", "search.method=tpe", "search.trials=6", "search.tpe_startup=2",
       "search.tpe_multivariate=false", "search.seed=3", "search.space=" + json.dumps(space), "run.dir=" + run_dir]
r = mpirun(2, tpe, timeout=600)
c.check("tpe search exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(run_dir, "search_report.json")))
proposals = report["proposals"]
c.check("tpe: 6 trials proposed, random draws until 2 results were in, then from the results",
        report["method"] == "tpe" and len(report["leaderboard"]) == 6 and len(proposals) == 6
        and all(p["startup"] == (p["results_seen"] < 2) for p in proposals)
        and proposals[0]["startup"] and not proposals[-1]["startup"], json.dumps(proposals))
c.check("tpe: the arrival order is recorded, one start and one result per trial, each start before its result",
        sorted(events_of(report, "start")) == [(t, 0) for t in range(6)]
        and sorted(events_of(report, "result")) == [(t, 0) for t in range(6)]
        and all(report["events"].index({"event": "start", "trial": t, "rung": 0, "split": 0})
                < report["events"].index({"event": "result", "trial": t, "rung": 0, "split": 0}) for t in range(6)),
        json.dumps(report["events"]))
groups = {t["group"] for t in report["tasks"]}
c.check("tpe: both groups ran trials", groups == {0, 1}, str(groups))

# Resume: cut the record after the third result (what finished later is forgotten) and go
# on; the replayed part is the same, then a resume mark, then the rest.
tasks_dir = os.path.join(run_dir, "tasks")
lines = open(os.path.join(tasks_dir, "events.jsonl")).read().splitlines()
results = [i for i, line in enumerate(lines) if json.loads(line)["event"] == "result"]
kept = lines[:results[2] + 1]
for line in lines[results[2] + 1:]:
    e = json.loads(line)
    if e["event"] == "result":
        os.remove(os.path.join(tasks_dir, "rung0_trial%d_holdout.json" % e["trial"]))
open(os.path.join(tasks_dir, "events.jsonl"), "w").write("\n".join(kept) + "\n")
first = report
r = mpirun(2, tpe + ["checkpoint.resume=auto"], timeout=600)
c.check("tpe resume exits 0 and says it replayed", r.rc == 0 and "recorded event(s) replayed" in r.text, r.text[-3000:])
report = json.load(open(os.path.join(run_dir, "search_report.json")))
replayed = [json.loads(line) for line in kept]
c.check("tpe resume: the recorded events replay, then a resume mark",
        report["events"][:len(kept)] == replayed and report["events"][len(kept)] == {"event": "resume"},
        json.dumps(report["events"]))
started = {e["trial"] for e in replayed if e["event"] == "start"}
params = {b["trial"]: b["parameters"] for b in first["leaderboard"]}
again = {b["trial"]: b["parameters"] for b in report["leaderboard"]}
c.check("tpe resume: the trials proposed before the cut are the same",
        all(params[t] == again[t] for t in started) and len(again) == 6, json.dumps([params, again]))

run_dir = tempfile.mkdtemp(prefix="hpctrain_asha_")
r = mpirun(2, ["train", base, *small, "train.epochs=2", "search.method=asha", "search.trials=4",
               "search.halving_eta=2", "search.space=" + json.dumps(space), "run.dir=" + run_dir], timeout=600)
c.check("asha search exits 0", r.rc == 0, r.text[-3000:])
report = json.load(open(os.path.join(run_dir, "search_report.json")))
rungs, promotions = report.get("rungs", []), report.get("promotions", [])
# At least floor(4/2) go on; an early promotion can take a trial that the later results
# leave outside the better half, so up to 3.
c.check("asha: 4 trials at 1 epoch, 2 or 3 promoted to 2 epochs",
        report["method"] == "asha" and len(rungs) == 2 and len(rungs[0]["trials"]) == 4
        and [x["epochs"] for x in rungs] == [1, 2] and 2 <= len(promotions) <= 3
        and len(rungs[1]["trials"]) == len(promotions), json.dumps([rungs, promotions]))
# Each promotion was one of the best floor(n/2) of the first n rung-0 results, in arrival order.
arrived = [t["trial"] for t in rungs[0]["trials"]]
score = {t["trial"]: t["score"] for t in rungs[0]["trials"]}
ok = True
for p in promotions:
    seen = sorted(arrived[:p["rung_results"]], key=lambda t: (-score[t], t))
    ok = ok and p["from_rung"] == 0 and p["trial"] in seen[:p["rung_results"] // 2]
c.check("asha: each promotion among the better half of the results so far", ok, json.dumps([rungs, promotions]))
c.check("asha: promoted trials ran at rung 1",
        sorted(t["trial"] for t in report["tasks"] if t["rung"] == 1) == sorted(p["trial"] for p in promotions),
        json.dumps(report["tasks"])[:1000])
c.check("asha: the winner reached rung 1", report["leaderboard"][0]["rung"] == 1, json.dumps(report["leaderboard"][0]))
c.finish()
