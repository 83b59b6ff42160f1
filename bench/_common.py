"""What every benchmark script records with its figures (docs/benchmarks.md): the date, the
commit, the machine and the command, and a wait for a quiet machine before each run."""
import contextlib
import datetime
import json
import os
import platform
import statistics
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


def init_gloo(port):
    """The PyTorch peers' set-up under mpiexec: rank and size from Open MPI's environment, a gloo
    process group on 127.0.0.1:PORT, one intra-op thread. Returns (rank, world)."""
    import torch
    import torch.distributed as dist
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("WORLD_SIZE", "2")))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return rank, world


def fashion_tensors(path, n, seed):
    """The first N training images of an hpctrain Fashion-MNIST HDF5 file, standardized, their
    labels, and a seeded sample order: (x, y, order) as torch tensors."""
    import h5py
    import numpy as np
    import torch
    with h5py.File(path, "r") as f:
        images = f["train/images"][:n].astype(np.float32) / 255.0
        labels = f["train/labels"][:n].astype(np.int64)
    x = torch.from_numpy((images - images.mean()) / images.std())
    y = torch.from_numpy(labels)
    return x, y, torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))


def median_seconds(f, repeats):
    """The median wall time of f() over `repeats` calls, after one warm-up call."""
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_results(name, result):
    """Writes bench/results/<date>-<name>.json (or -2, -3, ... beside an earlier run of the day:
    every run kept) and returns its path."""
    day = datetime.date.today().isoformat()
    path = os.path.join(ROOT, "bench", "results", f"{day}-{name}.json")
    n = 2
    while os.path.exists(path):
        path = os.path.join(ROOT, "bench", "results", f"{day}-{name}-{n}.json")
        n += 1
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return path


def save_json(path, result):
    """Writes `result` to PATH (when one was given) and says so."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print("wrote", path)


@contextlib.contextmanager
def two_nodes(prefix):
    """tests/nodes/cluster.sh's two-node cluster for a benchmark (as root): brought up, its
    environment file read into a dict (HPCTRAIN_NODES_MPIRUN, ...), and taken down however
    the benchmark ends."""
    cluster = os.path.join(ROOT, "tests", "nodes", "cluster.sh")
    env_file = os.path.join("/tmp", f"{prefix}{os.getpid()}.env")
    try:
        subprocess.run(["bash", cluster, "up", env_file], check=True)
        env = dict(line.strip().split("=", 1) for line in open(env_file) if "=" in line)
        env = {k: v.strip("'") for k, v in env.items()}
        if "HPCTRAIN_NODES_SKIP" in env:
            raise SystemExit("cannot build the two nodes: " + env["HPCTRAIN_NODES_SKIP"])
        env["HPCTRAIN_NODES_ENV_FILE"] = env_file
        yield env
    finally:
        subprocess.run(["bash", cluster, "down", env_file])


def link_rate(env, rate):
    """Limits the two nodes' link to RATE (tc's form, e.g. 1gbit; "off")."""
    subprocess.run(["bash", os.path.join(ROOT, "tests", "nodes", "cluster.sh"), "rate",
                    env["HPCTRAIN_NODES_ENV_FILE"], rate], check=True)
