"""slurm/train-cpu.sbatch run as a plain script (no Slurm here; issue 6 covers a real
one): it trains, and when the shell receives SIGUSR1 (what `#SBATCH --signal=B:USR1@120`
delivers) it passes the signal to the ranks, which checkpoint and exit 75; run again, the
script resumes from the checkpoint (checkpoint.resume=auto) and finishes."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_sbatch_")
run_dir = os.path.join(work, "run")
script = os.path.join(SOURCE, "slurm", "train-cpu.sbatch")
args = ["bash", script, os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json"), "data.path=" + FASHION,
        "data.limit_train=6000", "data.verify_hashes=false", "train.epochs=2", "model.channels=[8]",
        "model.fc_width=32", "train.batch_size=64", "checkpoint.every_steps=10", "run.dir=" + run_dir]
env = dict(os.environ, HPCTRAIN=BIN, OMPI_MCA_rmaps_base_oversubscribe="1")
p = subprocess.Popen(args, cwd=SOURCE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
first = os.path.join(run_dir, "checkpoints", "step_0000000020.h5")
deadline = time.monotonic() + 120
while time.monotonic() < deadline and p.poll() is None and not os.path.exists(first):
    time.sleep(0.02)
p.send_signal(signal.SIGUSR1)
out, err = p.communicate(timeout=120)
c.check("SIGUSR1 to the script: the ranks checkpoint and the script exits 75",
        p.returncode == 75 and "preempted by SIGUSR1" in err and not os.path.exists(os.path.join(run_dir, "report.json")),
        f"rc {p.returncode}\n{err[-2000:]}")
r = subprocess.run(args, cwd=SOURCE, env=env, capture_output=True, text=True, timeout=300)
report = json.load(open(os.path.join(run_dir, "report.json"))) if r.returncode == 0 else {}
c.check("run again: resumes from the checkpoint and finishes",
        r.returncode == 0 and "resuming from" in r.stdout and report["training"]["resumed_from"] is not None
        and len(report["epochs"]) == 2, r.stdout[-1500:] + r.stderr[-1500:])
c.finish()
