"""hpctrain plan with pipeline stages: the stage table is consistent with the model and the
schedule (per-stage parameters sum to the whole model; 1F1B holds min(p - s, m) microbatches on
stage s, GPipe m; a stage's activations are its microbatch's times the microbatches it holds;
the bubble is the theory's), --budget tells which fit, and a training run with the same split
reports the split, the microbatches held and (within 25%) the activation bytes the plan
predicted (report.json `parallel`). Bad shapes are config errors naming the key."""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, mpirun, run  # noqa: E402

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json")
MODEL = ["model.hidden=[256,256,256,256]", "model.dropout=0", "model.batch_norm=false", "train.batch_size=128",
         "data.path=" + FASHION]
ROW = re.compile(r"^(\d+|whole)\s+(.+?)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+|-)\s+(\d+|-)\s+"
                 r"([0-9.]+)\s+([0-9.]+)\s*$")


def table(text):
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = {"blocks": m.group(2), "parameters": int(m.group(3)), "optim": float(m.group(6)),
                                "param": float(m.group(4)),
                                "mb": None if m.group(7) == "-" else float(m.group(7)),
                                "in_flight": None if m.group(8) == "-" else int(m.group(8)),
                                "act": float(m.group(9)), "total": float(m.group(10))}
    return rows


def plan(schedule, m, *extra):
    return run([BIN, "plan", CONFIG, *MODEL, "parallel.pipeline_stages=2", f"parallel.microbatches={m}",
                f"parallel.schedule={schedule}", "--ranks", "2", *extra], timeout=300)


results = {}
for schedule, m in (("1f1b", 4), ("gpipe", 4), ("1f1b", 8), ("interleaved", 4)):
    # One split for the schedules compared below: an auto split follows measured block times,
    # which a busy machine can tip from one run to the next.
    r = plan(schedule, m, *([] if schedule == "interleaved" else ["parallel.stage_split=[2]"]))
    t = table(r.out)
    results[(schedule, m)] = t
    ok = r.rc == 0 and set(t) == {"0", "1", "whole"}
    c.check(f"{schedule} m={m}: plan exits 0 and prints a row per stage and the whole model", ok, r.text[-2500:])
    if not ok:
        continue
    header = re.search(r"(\d+) parameters", r.out)
    c.check(f"{schedule} m={m}: per-stage parameters sum to the whole model's",
            t["0"]["parameters"] + t["1"]["parameters"] == t["whole"]["parameters"] == int(header.group(1)), r.out)
    c.check(f"{schedule} m={m}: AdamW keeps two states per parameter",
            all(abs(t[s]["optim"] - 2 * t[s]["param"]) <= 0.011 for s in t), r.out)
    v = 2 if schedule == "interleaved" else 1
    bubble = re.search(r"predicted bubble \S+ = ([0-9.]+)", r.out)
    c.check(f"{schedule} m={m}: predicted bubble (p-1)/(v*m+p-1)",
            bubble and abs(float(bubble.group(1)) - 1 / (v * m + 1)) < 1e-3, r.out)
    expect = {"1f1b": (min(2, m), min(1, m)), "gpipe": (m, m)}.get(schedule)
    if expect:
        c.check(f"{schedule} m={m}: microbatches held on stages 0, 1 are {expect}",
                (t["0"]["in_flight"], t["1"]["in_flight"]) == expect, r.out)
        c.check(f"{schedule} m={m}: a stage's activations are one microbatch's times those held",
                all(abs(t[s]["act"] - t[s]["mb"] * t[s]["in_flight"]) <= 0.01 * t[s]["in_flight"] + 0.011
                    for s in ("0", "1")), r.out)
    else:
        c.check(f"{schedule} m={m}: interleaved holds between one and m * v (microbatch, chunk) pairs",
                all(1 <= t[s]["in_flight"] <= m * v and t[s]["act"] <= t[s]["mb"] * m + 0.011 for s in ("0", "1")),
                r.out)
    c.check(f"{schedule} m={m}: the whole model on one rank needs more than any stage",
            t["whole"]["total"] > max(t["0"]["total"], t["1"]["total"]), r.out)

if ("1f1b", 4) in results and ("gpipe", 4) in results and ("1f1b", 8) in results:
    f4, g4, f8 = results[("1f1b", 4)], results[("gpipe", 4)], results[("1f1b", 8)]
    c.check("stage 0 holds more under GPipe than under 1F1B at m=4",
            g4["0"]["act"] > 1.5 * f4["0"]["act"], f"{g4['0']} {f4['0']}")

# --budget between the largest stage and the whole model: the stages fit, the whole does not.
if ("1f1b", 4) in results and "whole" in results[("1f1b", 4)]:
    t = results[("1f1b", 4)]
    budget = (max(t["0"]["total"], t["1"]["total"]) + t["whole"]["total"]) / 2 / 1024
    r = plan("1f1b", 4, "--budget", f"{budget:.6f}", "--baseline", "0")
    c.check("--budget between the largest stage and the whole model: stages fit, the whole model does not",
            r.rc == 0 and "stage 0 fits" in r.out and "stage 1 fits" in r.out and "whole model on one rank EXCEEDS"
            in r.out, r.out[-1500:])

# A training run with the plan's split: the report names the same split and holds what the
# plan predicted.
r = plan("1f1b", 4, "parallel.stage_split=[2]")
t = table(r.out)
split = re.search(r"split \(parallel.stage_split\): (.+)", r.out)
run_dir = tempfile.mkdtemp(prefix="hpctrain_plan_pipe_")
tr = mpirun(2, ["train", CONFIG, *MODEL, "parallel.pipeline_stages=2", "parallel.microbatches=4",
                "parallel.schedule=1f1b", "parallel.stage_split=[2]", "data.limit_train=768",
                "data.verify_hashes=false", "train.epochs=1", "run.progress=none", "train.test_at_end=false",
                "checkpoint.at_end=false", "run.threads=1", "run.dir=" + run_dir], timeout=300)
par = json.load(open(os.path.join(run_dir, "report.json")))["parallel"] if tr.rc == 0 else {}
c.check("the training run ends and reports per-rank pipeline memory",
        tr.rc == 0 and all(k in par for k in ("activation_peak_bytes", "in_flight_peak", "microbatch_activation_bytes",
                                               "peak_rss_bytes", "gpu_peak_allocated_bytes")), tr.text[-2500:])
if par and split and "0" in t:
    c.check("the report's split is the plan's", par["stage_split"] == split.group(1).strip(),
            f"{par['stage_split']!r} vs {split.group(1)!r}")
    stage = par["stage_of_rank"]
    held = [par["in_flight_peak"][stage.index(s)] for s in (0, 1)]
    c.check("the run held the microbatches the plan predicted", held == [t["0"]["in_flight"], t["1"]["in_flight"]],
            f"{held} vs {t['0']['in_flight']}, {t['1']['in_flight']}")
    for s in (0, 1):
        measured = par["activation_peak_bytes"][stage.index(s)] / 2**20
        c.check(f"stage {s}: activations held in the run ({measured:.3f} MiB) within 25% of the plan's "
                f"({t[str(s)]['act']:.3f} MiB)", abs(measured - t[str(s)]["act"]) <= 0.25 * t[str(s)]["act"], r.out)
    c.check("peak RSS is recorded per rank", all(x > 0 for x in par["peak_rss_bytes"]), str(par["peak_rss_bytes"]))

for bad, key in ((["parallel.pipeline_stages=3"], "parallel.pipeline_stages"),
                 (["parallel.pipeline_stages=2", "parallel.microbatches=5"], "parallel.microbatches")):
    r = run([BIN, "plan", CONFIG, *MODEL, *bad, "--ranks", "2"], timeout=120)
    c.check(f"plan {' '.join(bad)} on 2 ranks: a config error naming {key}", r.rc == 2 and key in r.err,
            r.text[-800:])
c.finish()
