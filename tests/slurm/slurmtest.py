"""Helpers for the `slurm` tests: the throwaway cluster that tests/slurm/cluster.sh started
(its SLURM_CONF comes from HPCTRAIN_SLURM_ENV), sbatch submissions of the project's own
scripts from a scratch folder, and waiting for jobs to end."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks  # noqa: E402,F401

ENV_FILE = os.environ.get("HPCTRAIN_SLURM_ENV", os.path.join(SOURCE, "build", "slurm-cluster.env"))


def cluster_env():
    """The environment for Slurm commands and for the jobs (sbatch exports it to them)."""
    if not os.path.isfile(ENV_FILE):
        sys.exit(f"no test cluster: {ENV_FILE} missing (the slurm_cluster_up fixture starts one)")
    env = dict(os.environ)
    with open(ENV_FILE) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                env[key] = value
    env["HPCTRAIN_HOME"] = SOURCE
    env["HPCTRAIN"] = BIN
    # The jobs inherit this environment; the test's Open MPI settings (root, oversubscription)
    # would hide what the scripts must do themselves, so they are removed.
    for key in list(env):
        if key.startswith("OMPI_"):
            del env[key]
    return env


ENV = cluster_env()


def workdir(prefix):
    """A scratch submission folder: jobs write their runs/ and logs here."""
    return tempfile.mkdtemp(prefix=f"hpctrain_{prefix}_")


# The small training every job runs: the fast config on a slice of Fashion-MNIST.
SMALL = ["data.path=" + FASHION, "data.limit_train=3000", "data.verify_hashes=false", "train.epochs=1",
         "run.progress=lines"]
FAST_CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_fast.json")


def run(args, cwd, timeout=300, env=None):
    return subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def sbatch(args, cwd, env=None):
    """Submits; returns the job id (the array's id for a job array)."""
    p = run(["sbatch", "--parsable"] + args, cwd, 60, env)
    if p.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)} failed: {p.stderr}")
    return p.stdout.strip().split(";")[0]


def job_states(job_id):
    """State of each job (or array task) of job_id still known to slurmctld: {id: state}."""
    p = run(["squeue", "-h", "-j", str(job_id), "-o", "%i %T"], "/", 30)
    states = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def sacct_like(job_id):
    """Final states from scontrol (there is no accounting database): {id: (state, exit code)}."""
    p = run(["scontrol", "show", "job", "-o", str(job_id)], "/", 30)
    out = {}
    for line in p.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        key = (fields["ArrayJobId"] + "_" + fields["ArrayTaskId"] if "ArrayTaskId" in fields else
               fields.get("JobId", "?"))
        out[key] = (fields.get("JobState"), fields.get("ExitCode"))
    return out


def wait(job_id, timeout=600):
    """Waits until no job of job_id is pending or running; returns the final states."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not job_states(job_id):
            return sacct_like(job_id)
        time.sleep(1)
    run(["scancel", str(job_id)], "/", 30)
    raise TimeoutError(f"job {job_id} still running after {timeout} s: {sacct_like(job_id)}")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"<{path}: {e.strerror}>"


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
