"""The large-model configs train on a small CPU machine: configs/resnet_wide.json (> 14M
parameters) and configs/transformer_100m.json (>= 100M), both with gradient checkpointing,
on 2 ranks for 3 steps; the loss is finite and report.json counts the parameters."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_large_")
for name, floor in (("resnet_wide", 14_000_000), ("transformer_100m", 100_000_000)):
    run_dir = os.path.join(work, name)
    r = mpirun(2, ["train", os.path.join(SOURCE, "configs", name + ".json"), "data.path=" + FASHION,
                   "data.verify_hashes=false", "data.limit_train=2000", "train.max_steps=3", "train.batch_size=16",
                   "train.test_at_end=false", "run.progress=none", "run.log_every=1", "run.dir=" + run_dir],
               timeout=600)
    report = json.load(open(os.path.join(run_dir, "report.json"))) if r.rc == 0 else {}
    params = report.get("model", {}).get("parameters", 0)
    steps = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if '"step"' in line] \
        if r.rc == 0 else []
    c.check(f"{name}: {params:,} parameters (> {floor:,}) train 3 steps on 2 ranks with finite losses",
            r.rc == 0 and params > floor and len(steps) == 3 and all(abs(s["loss"]) < 1e3 for s in steps),
            r.text[-2000:])
c.finish()
