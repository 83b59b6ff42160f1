"""analysis/scaling.py with the performance model's inputs (analysis/scaling_model.py): a
committed validation JSON and strong and weak plan JSONs (tests/analysis/fixtures/scaling_model)
become model_validation.png, model_extrapolation.png and model.csv with the figures read from
them; beside a study's run directories the measured step of each rank count is set against the
prediction for it; a plan without predictions exits 2 naming the file."""
import csv
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import SOURCE, Checks  # noqa: E402

SCRIPT = os.path.join(SOURCE, "analysis", "scaling.py")
FIXTURE = os.path.join(SOURCE, "tests", "analysis", "fixtures", "scaling_model")
PNG = b"\x89PNG\r\n\x1a\n"
c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_scaling_model_")
plans = [os.path.join(FIXTURE, f"plan-{m}.json") for m in ("strong", "weak")]
validation = os.path.join(FIXTURE, "validation.json")


def scaling(args):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, timeout=120)


def rows_of(out):
    path = os.path.join(out, "model.csv")
    return list(csv.DictReader(open(path))) if os.path.isfile(path) else []


def png(path):
    return os.path.isfile(path) and open(path, "rb").read(8) == PNG


out = os.path.join(work, "alone")
p = scaling(["--validation", validation, "--plan", plans[0], "--plan", plans[1], "--out", out])
c.check("validation and plans alone: exit 0", p.returncode == 0, p.stdout + p.stderr)
c.check("model_validation.png and model_extrapolation.png written",
        png(os.path.join(out, "model_validation.png")) and png(os.path.join(out, "model_extrapolation.png")))
rows = rows_of(out)
want = {r["configuration"]: (r["predicted_step_ms"], r["measured_step_ms"])
        for r in json.load(open(validation))["rows"]}
got = {r["configuration"]: (float(r["predicted_step_ms"]), float(r["measured_step_ms"]))
       for r in rows if r["source"] == validation}
c.check("model.csv: the validation's predicted and measured step of every configuration", got == want, f"{got}\n{want}")
c.check("model.csv: error = predicted / measured - 1 (1 node x 2 ranks: +20%)",
        any(r["configuration"] == "1 node x 2 ranks" and abs(float(r["error"]) - 0.2) < 1e-9 for r in rows), str(rows))
strong = [(int(r["nodes"]), float(r["predicted_efficiency"])) for r in rows if r["scaling"] == "strong"]
weak = [(int(r["nodes"]), float(r["predicted_efficiency"])) for r in rows if r["scaling"] == "weak"]
c.check("model.csv: strong and weak efficiencies per node count from the plans",
        strong == [(1, 0.9), (2, 0.6), (4, 0.36)] and weak == [(1, 0.9), (2, 0.72), (4, 0.65)], f"{strong}\n{weak}")
c.check("the worst error against the target is printed", "worst 20.0% (target 15%)" in p.stdout, p.stdout)

# A study of 2 ranks per node on 1 and 2 nodes: its measured steps sit beside the strong plan.
study = os.path.join(work, "study")
for nodes, step in ((1, 5.0), (2, 2.5)):
    d = os.path.join(study, f"{nodes}n-0")
    os.makedirs(d)
    phases = {k: {"mean": v} for k, v in (("data", 0.5), ("forward", 1.0), ("backward", step - 2.0),
                                          ("comm_exposed", 0.0), ("optimizer", 0.5))}
    json.dump({"world": {"size": 2 * nodes, "nodes": nodes}, "time_per_step_ms": phases,
               "training": {"samples_per_s": 64 / step * 1000, "train_seconds": 1.0, "global_batch": 64}},
              open(os.path.join(d, "report.json"), "w"))
p = scaling([study, "--plan", plans[0]])
rows = rows_of(os.path.join(study, "analysis"))
errors = {int(r["nodes"]): float(r["error"]) for r in rows if r["error"]}
c.check("a study with --plan: its own table and plots, and model_extrapolation.png",
        p.returncode == 0 and png(os.path.join(study, "analysis", "efficiency.png"))
        and png(os.path.join(study, "analysis", "model_extrapolation.png")), p.stdout + p.stderr)
c.check("model.csv: the measured step of 2 and 4 ranks against the plan's 4.0 and 3.0 ms (-20%, +20%)",
        abs(errors.get(1, 9) + 0.2) < 1e-9 and abs(errors.get(2, 9) - 0.2) < 1e-9, str(rows))

bad = os.path.join(work, "bad.json")
json.dump({"scaling": "strong"}, open(bad, "w"))
p = scaling(["--plan", bad, "--out", os.path.join(work, "bad")])
c.check("a plan without predictions: exit 2 naming the file", p.returncode == 2 and bad in p.stderr, p.stderr)
c.finish()
