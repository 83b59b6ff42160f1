"""What every benchmark script records with its figures (docs/benchmarks.md): the date, the
commit, the machine and the command, and a wait for a quiet machine before each run."""
import datetime
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def wait_for_quiet(max_load, max_wait):
    """Waits up to max_wait s for the 1-minute load to fall below max_load; returns the load."""
    t0 = time.time()
    while os.getloadavg()[0] > max_load and time.time() - t0 < max_wait:
        time.sleep(5)
    return os.getloadavg()[0]


def provenance():
    """date, commit, machine and command of this run, as the results JSON records them."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
            "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])}
