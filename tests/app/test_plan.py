"""hpctrain plan: per-rank memory of a config. The parameter count equals the trained
model's; activations extrapolated from probe batches agree with those measured at the
configured batch (bench activations, the same measure) within 15%; checkpointing needs
less; a larger budget allows a larger batch; bad arguments are usage errors."""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, mpirun, run  # noqa: E402

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
model = ["model.name=resnet", "model.width=16", "model.blocks=[2,2,2]", "train.batch_size=32", "data.path=" + FASHION]


def mib(text, label):
    m = re.search(re.escape(label) + r"\s+([0-9.]+)", text)
    return float(m.group(1)) if m else None


r = run([BIN, "plan", CONFIG, *model, "--budget", "2"], timeout=300)
c.check("plan exits 0 and prints the table", r.rc == 0 and "parameters (fp32)" in r.out, r.text[-2000:])
plain, ck = mib(r.out, "activations, no checkpointing"), mib(r.out, "activations, checkpointing every block")
c.check("checkpointing needs less activation memory", plain and ck and ck < plain, r.out)
m = re.search(r"largest per-rank batch (\d+) without, (\d+) with", r.out)
r4 = run([BIN, "plan", CONFIG, *model, "--budget", "4"], timeout=300)
m4 = re.search(r"largest per-rank batch (\d+) without, (\d+) with", r4.out)
c.check("a larger budget allows a larger batch, and checkpointing a larger one still",
        m and m4 and int(m4.group(1)) > int(m.group(1)) and int(m.group(2)) > int(m.group(1)), r.out + r4.out)

b = run([BIN, "bench", "activations", CONFIG, *model, "--steps", "3"], timeout=300)
measured = re.search(r"plain\s+([0-9.]+)", b.out)
c.check(f"extrapolated activations ({plain} MiB) within 15% of those measured at batch 32 "
        f"({measured.group(1) if measured else '?'} MiB)",
        b.rc == 0 and measured and plain and abs(plain - float(measured.group(1))) <= 0.15 * float(measured.group(1)),
        b.text[-1500:])

run_dir = tempfile.mkdtemp(prefix="hpctrain_plan_")
t = mpirun(1, ["train", CONFIG, *model, "data.limit_train=256", "data.verify_hashes=false", "train.epochs=1",
               "run.progress=none", "train.test_at_end=false", "run.dir=" + run_dir], timeout=300)
params = json.load(open(os.path.join(run_dir, "report.json")))["model"]["parameters"] if t.rc == 0 else None
c.check("the parameter count is the trained model's", params and f"{params} parameters" in r.out,
        f"{params}\n{r.out[:300]}")
r2 = mpirun(2, ["plan", CONFIG, *model], timeout=300)
c.check("under mpirun the per-rank batch is the global batch over the ranks",
        r2.rc == 0 and "2 rank(s), per-rank batch 16" in r2.out and r2.out.count("parameters (fp32)") == 1, r2.text[-1500:])
for bad, needle in ((["--budget", "x"], "--budget needs a positive number"), (["--frobnicate"], "unknown option")):
    r = run([BIN, "plan", CONFIG, *model, *bad], timeout=60)
    c.check(f"plan {' '.join(bad)}: usage error", r.rc == 2 and needle in r.err, r.text[-500:])
r = run([BIN, "plan", CONFIG, "data.path=/nonexistent.h5"], timeout=60)
c.check("a missing data file is a data error", r.rc == 3 and "/nonexistent.h5" in r.err, r.text[-500:])
c.finish()
