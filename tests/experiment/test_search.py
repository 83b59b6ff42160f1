"""Hyperparameter search over rank groups: a grid comparing models and learning rates
(one trial fails and is reported, the others complete), the leaderboard and the best
configuration as a runnable file, the final retrain; then successive halving scored by
2-fold cross-validation."""
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
c.finish()
