"""Bad input on 2 ranks: every case exits non-zero within seconds, prints one clear
message naming what is wrong and where (once, not once per rank), and no raw MPI or HDF5
error stack."""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, SOURCE, Checks, make_idx_dir, mpirun, run  # noqa: E402

try:
    import h5py
    import numpy as np
except ImportError:
    h5py = None

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_bad_")
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")

# A small valid data set every case starts from.
src = make_idx_dir(n_train=64, n_test=16)
good = os.path.join(work, "good.h5")
r = run([BIN, "import", "mnist", "--source", src, "--output", good])
assert r.rc == 0, r.text


def variant(name, edit):
    path = os.path.join(work, name + ".h5")
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def write(name, text):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def expect_failure(name, args, message, code=None):
    r = mpirun(2, args, timeout=60)
    ok = r.rc != 0 and message in r.err
    ok = ok and r.err.count("hpctrain: error") + r.err.count("hpctrain: unknown") <= 1
    ok = ok and "HDF5-DIAG" not in r.text and "MPI_ERR" not in r.text
    if code is not None:
        ok = ok and r.rc == code
    c.check(f"{name}: exit {r.rc} in {r.seconds:.1f}s with one message", ok and r.seconds < 60,
            f"expected {message!r}\n--- stderr ---\n{r.err}\n--- stdout ---\n{r.out}")


small = ["run.dir=" + os.path.join(work, "run"), "train.batch_size=8", "train.epochs=1", "run.progress=none"]

expect_failure("missing config", ["train", "/nonexistent.json"], "/nonexistent.json: cannot open config file", 2)
expect_failure("invalid JSON", ["train", write("bad.json", '{"data": {"path": "x.h5",}}')],
               "bad.json:1:", 2)
expect_failure("unknown key", ["train", write("unknown.json", '{"data": {"path": "x.h5"}, "model": {"widht": 3}}')],
               'unknown key "model.widht"', 2)
expect_failure("wrong type override", ["train", CONFIG, "train.epochs=two"],
               'train.epochs: expected integer in [1, 100000], found string "two"', 2)
expect_failure("out of range", ["train", CONFIG, "optimizer.lr=-1"], "optimizer.lr: expected number in [0, 100]", 2)
expect_failure("missing data file", ["train", CONFIG, "data.path=/nonexistent/data.h5"] + small,
               "/nonexistent/data.h5: no such file", 3)
expect_failure("not HDF5", ["train", CONFIG, "data.path=" + write("text.h5", "hello")] + small,
               "text.h5: not an HDF5 file", 3)
expect_failure("global batch too large", ["train", CONFIG, "data.path=" + good, "train.batch_size=4096"] + small[:1],
               "train.batch_size: the global batch (4096) is larger than the training split", 2)
expect_failure("attention kernel that needs a GPU, on the CPU",
               ["train", CONFIG, "data.path=" + good, "device.type=cpu", "model.name=transformer", "model.embed_dim=16",
                "model.heads=2", "model.layers=1", "model.patch_size=4", "device.attention=cudnn"] + small,
               "device.attention=cudnn: LibTorch has this attention kernel on GPUs only", 2)
# A chosen attention kernel that does not take the inputs (LibTorch's CPU flash kernel takes no
# dropout): found at the first forward, on every rank, a message naming the key, no stack.
r = mpirun(2, ["train", CONFIG, "data.path=" + good, "device.type=cpu", "model.name=transformer", "model.embed_dim=16",
               "model.heads=2", "model.layers=1", "model.patch_size=4", "model.dropout=0.1",
               "model.fused_kernels=false", "device.attention=flash"] + small, timeout=60)
c.check(f"attention kernel that does not take the inputs: exit {r.rc} in {r.seconds:.1f}s naming device.attention",
        r.rc != 0 and "device.attention=flash: LibTorch's flash attention does not take these inputs" in r.err
        and "frame #" not in r.text and r.seconds < 60, r.text[-3000:])
expect_failure("inspect missing file", ["inspect", "/nonexistent/data.h5"], "no such file", 3)

c.check("h5py available to build malformed files", h5py is not None, "pip install h5py numpy")
if h5py is not None:
    foreign = os.path.join(work, "foreign.h5")
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    expect_failure("foreign HDF5", ["train", CONFIG, "data.path=" + foreign] + small, "not an hpctrain data set", 3)
    expect_failure("missing dataset",
                   ["train", CONFIG, "data.path=" + variant("nolabels", lambda f: f.__delitem__("test/labels"))] + small,
                   "/test/labels is missing", 3)

    def wrong_dtype(f):
        del f["train/images"]
        f["train/images"] = np.zeros((64, 8, 8), dtype=np.float32)
    expect_failure("wrong dtype and rank", ["train", CONFIG, "data.path=" + variant("dtype", wrong_dtype)] + small,
                   "/train/images: expected uint8 [N, C, H, W], found float32 [64, 8, 8]", 3)

    def short_labels(f):
        del f["train/labels"]
        f["train/labels"] = np.zeros(10, dtype=np.int32)
    expect_failure("mismatched counts", ["train", CONFIG, "data.path=" + variant("count", short_labels)] + small,
                   "/train/labels has 10 rows but /train/images has 64", 3)

    def bad_label(f):
        f["train/labels"][63] = 42  # in the last rank's shard
    expect_failure("label out of range", ["train", CONFIG, "data.path=" + variant("label", bad_label)] + small,
                   "/train/labels[63] = 42 is out of range [0, 10)", 3)

    def flip_pixel(f):
        f["test/images"][0, 0, 0, 0] = 255 - f["test/images"][0, 0, 0, 0]
    expect_failure("corrupted pixel", ["train", CONFIG, "data.path=" + variant("pixel", flip_pixel)] + small,
                   "/test/images does not match its sha256 attribute", 3)
    r = mpirun(2, ["train", CONFIG, "data.path=" + variant("pixel2", flip_pixel), "data.verify_hashes=false"] + small,
               timeout=120)
    c.check("verify_hashes=false skips the check", r.rc == 0, r.text)



# Cross-validation and search settings.
expect_failure("cv group size does not divide the ranks", ["train", CONFIG, "data.path=" + good, "cv.folds=2",
               "cv.ranks_per_group=3"] + small, "cv.ranks_per_group: 3 does not divide the 2 ranks", 2)
expect_failure("one fold", ["train", CONFIG, "data.path=" + good, "cv.folds=1"] + small, "cv.folds: expected 0 (off)", 2)
expect_failure("more folds than samples", ["train", CONFIG, "data.path=" + good, "cv.folds=100", "cv.stratified=false"]
               + small, "cv.folds: k=100 cannot be greater than the number of samples n=64", 2)
expect_failure("early stopping in cross-validation", ["train", CONFIG, "data.path=" + good, "cv.folds=2",
               "train.early_stop_patience=2"] + small, "train.early_stop_patience: early stopping would select", 2)
expect_failure("unknown key in the search space", ["train", CONFIG, "data.path=" + good, "search.method=grid",
               'search.space={"optimizer.lrr": [0.1]}'] + small, '"optimizer.lrr" is not a config key', 2)
expect_failure("search value out of range", ["train", CONFIG, "data.path=" + good, "search.method=grid",
               'search.space={"optimizer.lr": [0.1, -1]}'] + small, "search trial 1 (optimizer.lr=-1): optimizer.lr", 2)
expect_failure("the split varies between trials", ["train", CONFIG, "data.path=" + good, "search.method=grid",
               'search.space={"data.val_fraction": [0.1, 0.2]}'] + small,
               "search.space.data.val_fraction: every trial is scored on the same split", 2)
expect_failure("early stopping in a cross-validated trial", ["train", CONFIG, "data.path=" + good, "cv.folds=2",
               "search.method=grid", 'search.space={"train.early_stop_patience": [0, 2]}'] + small,
               "search trial 1 (train.early_stop_patience=2): train.early_stop_patience", 2)
expect_failure("regression metric on classification data", ["train", CONFIG, "data.path=" + good, "cv.folds=2",
               "search.method=grid", 'search.space={"optimizer.lr": [0.1]}', "search.metric=rmse"] + small,
               "search.metric: rmse does not apply to classification data", 2)

# Search shards (job arrays) and their merge.
grid = ["search.method=grid", 'search.space={"optimizer.lr": [0.1, 0.2]}', "search.scoring=holdout",
        "data.val_fraction=0.2"]
expect_failure("search shard out of range", ["train", CONFIG, "data.path=" + good] + grid + small +
               ["search.shards=2", "search.shard=2"], "search.shard: 2 is not below search.shards (2)", 2)
expect_failure("more shards than trials", ["train", CONFIG, "data.path=" + good] + grid + small +
               ["search.shards=3", "search.shard=2"], "search.shard: shard 2 of 3 has no trials (the search has 2)", 2)
expect_failure("successive halving split into shards", ["train", CONFIG, "data.path=" + good, "search.method=halving",
               'search.space={"optimizer.lr": [0.1, 0.2]}', "search.shards=2"] + small,
               "search.shards: successive halving ranks every trial between rungs", 2)
expect_failure("tpe split into shards", ["train", CONFIG, "data.path=" + good, "search.method=tpe",
               'search.space={"optimizer.lr": [0.1, 0.2]}', "search.shards=2"] + small,
               "search.shards: search.method=tpe decides each task from every result so far", 2)
expect_failure("tpe gamma out of range", ["train", CONFIG, "data.path=" + good, "search.method=tpe",
               'search.space={"optimizer.lr": [0.1, 0.2]}', "search.tpe_gamma=1.5"] + small,
               "search.tpe_gamma: expected number in [0, 1]", 2)
expect_failure("a tpe space offering a value the schema refuses", ["train", CONFIG, "data.path=" + good,
               "search.method=tpe", 'search.space={"model.dropout": {"uniform": [0, 0.99]}}'] + small,
               "model.dropout: expected number in [0, 0.95], found number 0.99", 2)
expect_failure("shards without a search", ["train", CONFIG, "data.path=" + good, "cv.folds=2", "search.shards=2"] + small,
               "search.shards: only a search (search.method) splits into shards", 2)
os.makedirs(os.path.join(work, "no_shards", "x"), exist_ok=True)
expect_failure("search-merge of a folder without shards", ["search-merge", os.path.join(work, "no_shards")],
               "no_shards: no shard reports (search_report.json) in the folders under it", 3)
os.makedirs(os.path.join(work, "bad_shard", "shard-0"), exist_ok=True)
write("bad_shard/shard-0/search_report.json", '{"format": "hpctrain-search-report", "shards": 2')
expect_failure("search-merge of a truncated shard report", ["search-merge", os.path.join(work, "bad_shard")],
               "shard-0/search_report.json: not a search report", 3)
expect_failure("search-merge of a missing folder", ["search-merge", os.path.join(work, "nowhere")],
               "nowhere: not a directory", 3)


def dead_rank():
    """SIGKILL one rank mid-training: the job must end, non-zero, within seconds."""
    import signal
    import subprocess
    import time
    from hpctest import BIN, FASHION, MPIEXEC
    if not os.path.exists(FASHION):
        return c.check("dead rank: Fashion-MNIST fixture present", False, FASHION)
    run_dir = os.path.join(work, "dead")
    p = subprocess.Popen([MPIEXEC, "-n", "2", "--oversubscribe", BIN, "train", CONFIG, "data.path=" + FASHION,
                          "run.dir=" + run_dir, "run.log_every=5", "run.progress=none"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        time.sleep(0.2)
    ranks = subprocess.run(["pgrep", "-P", str(p.pid), "-f", "hpctrain"], capture_output=True, text=True).stdout.split()
    if len(ranks) != 2:
        p.kill()
        return c.check("dead rank: found both rank processes", False, str(ranks))
    killed = time.monotonic()
    os.kill(int(ranks[-1]), signal.SIGKILL)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        return c.check("dead rank: job ends after one rank is killed", False, "still running after 60 s")
    took = time.monotonic() - killed
    c.check(f"dead rank: job ends non-zero {took:.1f}s after one rank was killed", p.returncode != 0 and took < 30,
            out[-2000:])


dead_rank()
shutil.rmtree(work, ignore_errors=True)
shutil.rmtree(src, ignore_errors=True)
c.finish()
