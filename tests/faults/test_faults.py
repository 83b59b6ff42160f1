"""Fault injection: what the user sees when the disk fills or fails under hpctrain's
writes, or a checkpoint or data set is corrupt, and that nothing good is lost
(docs/checkpoints.md, "Durability"; docs/reliability.md).

Faults are real where the machine allows: as root a small tmpfs is mounted and filled, so
checkpoints, imports and exports meet a genuinely full file system (skipped with a message
when not root or when mount is refused). Everywhere, a test-only LD_PRELOAD shim
(tests/faults/fault_shim.c, built beside the tests and never linked into hpctrain) makes
write, fsync or rename fail on one path pattern, the failures a sick or full disk gives.

Each fault must end with one message naming the file and the OS error, a non-zero exit on
every rank (2 ranks), the previous checkpoint (or data set, or export) byte for byte as it
was, no temporary file, and a resume that works once the fault is gone."""
import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, MPIEXEC, SOURCE, Checks, make_idx_dir, run  # noqa: E402

SHIM = os.environ.get("HPCTRAIN_FAULT_SHIM", "")
c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_faults_")
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json")
src = make_idx_dir(n_train=256, n_test=64)
DATA = os.path.join(work, "data.h5")
r = run([BIN, "import", "mnist", "--source", src, "--output", DATA])
assert r.rc == 0, r.text
COMMON = ["data.path=" + DATA, "model.hidden=[16]", "train.batch_size=16", "run.progress=none",
          "checkpoint.every_steps=4", "checkpoint.keep=2"]
# Every rank reports its own exit status, so "non-zero on every rank" is checked, not assumed.
RANK_EXIT = '"$@"; rc=$?; echo "rank-exit ${OMPI_COMM_WORLD_RANK:-$PMI_RANK} $rc" >&2; exit $rc'


def fault_env(path, op, after=0):
    return {"LD_PRELOAD": SHIM, "HPCTRAIN_FAULT_PATH": path, "HPCTRAIN_FAULT_OP": op,
            "HPCTRAIN_FAULT_AFTER": str(after)}


def mpirun2(args, env=None, timeout=180):
    cmd = [MPIEXEC, "-n", "2", "--oversubscribe"]
    for k in (env or {}):
        cmd += ["-x", k]
    cmd += ["sh", "-c", RANK_EXIT, "sh", BIN] + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=SOURCE,
                       env=dict(os.environ, **(env or {})))
    codes = [int(line.split()[2]) for line in p.stderr.splitlines() if line.startswith("rank-exit ")]
    return p.returncode, p.stdout, p.stderr, codes


def train(run_dir, extra, env=None):
    return mpirun2(["train", CONFIG] + COMMON + ["run.dir=" + run_dir] + extra, env)


def snapshot(folder, pattern="*"):
    """Name -> SHA-256 of every file in `folder` matching `pattern`."""
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(folder, pattern)))}


def temporaries(folder):
    return glob.glob(os.path.join(folder, "**", "*.tmp"), recursive=True)


def checkpoint_verifies(path):
    """The documented Python check of a checkpoint's SHA-256 (docs/checkpoints.md), versions 1 and 2."""
    with h5py.File(path, "r") as f:
        manifest = f["manifest"][()].astype(str)
        h = hashlib.sha256()
        if f.attrs["format_version"] == 1:
            for name in manifest:
                h.update(name.encode())
                h.update(f[name][()].tobytes())
            return h.hexdigest() == f.attrs["sha256"].decode()
        for (index, first, size), digest in zip(f["checksum/parts"][()], f["checksum/sha256"][()]):
            name = manifest[index]
            data = f[name][()].tobytes()[first:first + size]
            if hashlib.sha256(data).digest() != digest.tobytes():
                return False
            h.update(name.encode() + b"\0" + struct.pack("<QQ", first, size) + digest.tobytes())
        return h.hexdigest() == f.attrs["sha256"].decode()


def expect_failure(name, result, must_contain, before, folder, pattern="*", every_rank=True):
    rc, out, err, codes = result
    text = out + err
    ok = rc != 0 and all(m in err for m in must_contain)
    ok = ok and err.count("hpctrain: error") == 1 and "HDF5-DIAG" not in text
    if every_rank:
        ok = ok and len(codes) == 2 and all(code != 0 for code in codes)
    after = snapshot(folder, pattern)
    left = temporaries(folder)
    message = next((line for line in err.splitlines() if line.startswith("hpctrain: error")), "")
    print(f"  {name}: {message}")
    c.check(f"{name}: exit {rc} (ranks {codes}), one message naming the file and the OS error", ok,
            f"expected {must_contain}\n--- stderr ---\n{err[-3000:]}\n--- stdout ---\n{out[-1500:]}")
    c.check(f"{name}: previous files intact, no temporary file left",
            after == before and not left, f"before {before}\nafter {after}\nleft {left}")


def fill(folder):
    """Writes zeros until the file system holding `folder` is full."""
    path = os.path.join(folder, "filler")
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * 65536
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path


def disk_full_cases():
    """Checkpoint, import and export on a genuinely full tmpfs."""
    if os.geteuid() != 0:
        print("SKIP disk-full cases on a real file system: not root (mounting a tmpfs needs root)")
        return
    mnt = os.path.join(work, "full")
    os.makedirs(mnt)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], capture_output=True, text=True)
    if m.returncode != 0:
        print(f"SKIP disk-full cases on a real file system: mount refused ({m.stderr.strip()})")
        return
    try:
        ckpt = os.path.join(mnt, "checkpoints")
        run_dir = os.path.join(work, "full_run")
        on_tmpfs = ["checkpoint.dir=" + ckpt]
        rc, out, err, _ = train(run_dir, on_tmpfs + ["train.epochs=1"])
        c.check("[disk full] first run writes checkpoints on the tmpfs", rc == 0 and snapshot(ckpt), err[-2000:])
        data = os.path.join(mnt, "data.h5")
        r = run([BIN, "import", "mnist", "--source", src, "--output", data])
        export = os.path.join(mnt, "export")
        r2 = run([BIN, "export", run_dir, "--checkpoint", sorted(glob.glob(ckpt + "/step_*.h5"))[-1],
                  "--output", export])
        c.check("[disk full] import and export onto the tmpfs", r.rc == 0 and r2.rc == 0, r.text + r2.text)
        before_ckpt, before_data, before_export = snapshot(ckpt), snapshot(mnt, "*.h5"), snapshot(export)
        filler = fill(mnt)

        expect_failure("[disk full] checkpoint", train(run_dir, on_tmpfs + ["train.epochs=2", "checkpoint.resume=auto"]),
                       ["No space left on device", ckpt + "/step_"], before_ckpt, ckpt)
        expect_failure("[disk full] checkpoint written in parallel (parallel.shard)",
                       train(run_dir, on_tmpfs + ["train.epochs=2", "checkpoint.resume=auto"] + SHARDED),
                       ["No space left on device", ckpt + "/step_"], before_ckpt, ckpt)
        other = make_idx_dir(n_train=300, n_test=40)
        r = run([BIN, "import", "mnist", "--source", other, "--output", data])
        expect_failure("[disk full] import", (r.rc, r.out, r.err, []), ["No space left on device", data],
                       before_data, mnt, "*.h5", every_rank=False)
        r = run([BIN, "export", run_dir, "--checkpoint", sorted(glob.glob(ckpt + "/step_*.h5"))[0],
                 "--output", export])
        expect_failure("[disk full] export", (r.rc, r.out, r.err, []), ["No space left on device", export],
                       before_export, export, every_rank=False)

        os.remove(filler)
        newest = sorted(before_ckpt)[-1]
        rc, out, err, _ = train(run_dir, on_tmpfs + ["train.epochs=2", "checkpoint.resume=auto"])
        kept = sorted(glob.glob(ckpt + "/step_*.h5"))
        c.check(f"[disk full] space back: resume=auto continues from {newest} and finishes",
                rc == 0 and "resuming from " + os.path.join(ckpt, newest) in out and kept
                and all(checkpoint_verifies(p) for p in kept), (out + err)[-2000:])
    finally:
        subprocess.run(["umount", mnt])


def checkpoint_shim_cases(label="shim", extra=()):
    """Failed write (ENOSPC), fsync (EIO) and rename (EIO) of a checkpoint, on 2 ranks."""
    run_dir = os.path.join(work, label + "_run")
    ckpt = os.path.join(run_dir, "checkpoints")
    extra = list(extra)
    rc, out, err, _ = train(run_dir, extra + ["train.epochs=1"])
    c.check(f"[{label}] first run", rc == 0, err[-2000:])
    before = snapshot(ckpt)
    newest = sorted(before)[-1]
    resume = extra + ["train.epochs=2", "checkpoint.resume=auto"]
    expect_failure(f"[{label}] checkpoint write fails (ENOSPC)",
                   train(run_dir, resume, fault_env("checkpoints/step_", "write", 2048)),
                   ["No space left on device", ckpt + "/step_", ".h5.tmp"], before, ckpt)
    expect_failure(f"[{label}] checkpoint fsync fails (EIO)", train(run_dir, resume, fault_env("checkpoints/step_", "fsync")),
                   [".h5.tmp: cannot fsync: Input/output error"], before, ckpt)
    expect_failure(f"[{label}] checkpoint rename fails (EIO)",
                   train(run_dir, resume, fault_env("checkpoints/step_", "rename")),
                   [".h5: cannot rename", "Input/output error"], before, ckpt)
    if extra:  # written in parallel: a rank other than the first fails to write its slices
        expect_failure(f"[{label}] rank 1's slices cannot be written (ENOSPC)",
                       train(run_dir, resume, dict(fault_env("checkpoints/step_", "write"), HPCTRAIN_FAULT_RANK="1")),
                       ["hpctrain: error (rank 1)", "No space left on device", ckpt + "/step_", ".h5.tmp"], before,
                       ckpt)
    rc, out, err, _ = train(run_dir, resume)
    c.check(f"[{label}] fault gone: resume=auto continues from {newest}",
            rc == 0 and "resuming from " + os.path.join(ckpt, newest) in out, (out + err)[-2000:])
    return run_dir


# Sharded runs write checkpoints in parallel (format version 2): every rank its slices.
SHARDED = ["parallel.shard=optimizer"]


def corrupt_cases(run_dir, label="corrupt", extra=()):
    """Truncated and bit-flipped checkpoints: fallback, or a clear refusal."""
    ckpt = os.path.join(run_dir, "checkpoints")
    extra = list(extra)
    files = sorted(glob.glob(ckpt + "/step_*.h5"))
    newest, previous = files[-1], files[-2]
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    rc, out, err, _ = train(run_dir, extra + ["train.epochs=3", "checkpoint.resume=auto"])
    c.check(f"[{label}] truncated newest checkpoint reported, the one before it used",
            rc == 0 and "skipping checkpoint" in err and os.path.basename(newest) in err
            and "resuming from " + previous in out, (out + err)[-2000:])
    bad = os.path.join(work, label + "_flipped.h5")
    shutil.copy(sorted(glob.glob(ckpt + "/step_*.h5"))[-1], bad)
    with h5py.File(bad, "r+") as f:  # one bit of one weight, as a failing disk or memory flips it
        w = f["model/parameters/00000"][()]
        w.view(np.uint32).flat[0] ^= 1 << 12
        f["model/parameters/00000"][...] = w
    rc, out, err, codes = train(run_dir, extra + ["train.epochs=3", "checkpoint.resume=" + bad])
    c.check(f"[{label}] checkpoint.resume=PATH with a flipped bit: refused with exit 3 on every rank, naming the file",
            rc == 3 and bad + ": checksum mismatch" in err and codes == [3, 3], err[-2000:])
    only_bad = os.path.join(work, label + "_all_corrupt")
    os.makedirs(os.path.join(only_bad, "checkpoints"))
    shutil.copy(bad, os.path.join(only_bad, "checkpoints", os.path.basename(previous)))
    rc, out, err, codes = train(only_bad, extra + ["train.epochs=3", "checkpoint.resume=auto"])
    c.check(f"[{label}] resume=auto with no valid checkpoint stops with a clear error (not a fresh start)",
            rc == 3 and "none of the 1 checkpoints" in err and "starting fresh" not in out, (out + err)[-2000:])


def data_corrupt_cases():
    """A data set with a flipped bit (images, labels) or truncated: refused before training
    with exit 3 on every rank, naming the file and what is wrong (data.verify_hashes)."""
    def corrupt_copy(name, dataset, byte_at, bit):
        path = os.path.join(work, name)
        shutil.copy(DATA, path)
        with h5py.File(DATA, "r") as f:  # where the dataset's first chunk lies in the file
            offset = f[dataset].id.get_chunk_info(0).byte_offset
        with open(path, "r+b") as f:  # one bit, as a failing disk or memory flips it
            f.seek(offset + byte_at)
            byte = f.read(1)[0]
            f.seek(offset + byte_at)
            f.write(bytes([byte ^ (1 << bit)]))
        return path

    # The label keeps a valid class (5 becomes 4): only the hash can tell.
    for name, dataset, byte_at, bit in (("flipped_images.h5", "train/images", 21, 4),
                                        ("flipped_labels.h5", "test/labels", 20, 0)):
        bad = corrupt_copy(name, dataset, byte_at, bit)
        rc, out, err, codes = mpirun2(["train", CONFIG] + COMMON + ["data.path=" + bad, "train.epochs=1",
                                                                    "run.dir=" + os.path.join(work, "run_" + name)])
        c.check(f"[data] a flipped bit in /{dataset}: exit 3 on every rank, one message naming file and dataset",
                rc == 3 and codes == [3, 3] and err.count("hpctrain: error") == 1
                and f"{bad}: /{dataset} does not match its sha256 attribute" in err, err[-2000:])
    truncated = os.path.join(work, "truncated.h5")
    shutil.copy(DATA, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(DATA) * 2 // 3)
    rc, out, err, codes = mpirun2(["train", CONFIG] + COMMON + ["data.path=" + truncated, "train.epochs=1",
                                                                "run.dir=" + os.path.join(work, "run_truncated")])
    c.check("[data] a truncated data set: exit 3 on every rank, one message naming the file",
            rc == 3 and codes == [3, 3] and err.count("hpctrain: error") == 1
            and f"{truncated}: cannot open HDF5 file" in err and "truncated" in err, err[-2000:])


def other_write_cases():
    """metrics.jsonl, report.json, an import and an export meeting a full disk (shim)."""
    run_dir = os.path.join(work, "metrics_run")
    rc, out, err, codes = train(run_dir, ["train.epochs=1", "run.log_every=1"],
                                fault_env("metrics.jsonl", "write", 700))
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    whole = all(json.loads(line) is not None for line in lines)
    c.check("[shim] metrics.jsonl disk full: one message naming it, non-zero exit, only whole lines kept",
            rc != 0 and "metrics.jsonl: cannot write: No space left on device" in err
            and err.count("hpctrain: error") == 1 and whole and len(lines) >= 1, err[-2000:])

    run_dir = os.path.join(work, "report_run")
    result = train(run_dir, ["train.epochs=1", "checkpoint.every_steps=0"], fault_env("report.json", "write"))
    expect_failure("[shim] report.json disk full", result, ["report.json.tmp: cannot write: No space left on device"],
                   {}, run_dir, "report.json*")

    target = os.path.join(work, "imported.h5")
    shutil.copy(DATA, target)
    before = snapshot(work, "imported.h5*")
    env = dict(os.environ, **fault_env("imported.h5", "write", 4096))
    p = subprocess.run([BIN, "import", "mnist", "--source", src, "--output", target], capture_output=True,
                       text=True, env=env, timeout=120)
    expect_failure("[shim] import disk full", (p.returncode, p.stdout, p.stderr, []),
                   ["No space left on device", target], before, work, "imported.h5*", every_rank=False)

    export = os.path.join(work, "export")
    ckpt = sorted(glob.glob(os.path.join(work, "shim_run", "checkpoints", "step_*.h5")))[-1]
    r = run([BIN, "export", os.path.join(work, "shim_run"), "--checkpoint", ckpt, "--output", export])
    before = snapshot(export)
    env = dict(os.environ, **fault_env("model.safetensors", "write", 1000))
    p = subprocess.run([BIN, "export", os.path.join(work, "shim_run"), "--checkpoint", ckpt, "--output", export],
                       capture_output=True, text=True, env=env, timeout=120)
    expect_failure("[shim] export disk full", (p.returncode, p.stdout, p.stderr, []),
                   ["model.safetensors.tmp: cannot write: No space left on device"], before, export,
                   every_rank=False)
    c.check("[shim] the export before the fault was complete", r.rc == 0 and "model.safetensors" in before, r.text)


if not SHIM or not os.path.exists(SHIM):
    print(f"FAIL the fault shim is missing ({SHIM!r}); build the test tree")
    sys.exit(1)
disk_full_cases()
shim_run = checkpoint_shim_cases()
corrupt_cases(shim_run)
sharded_run = checkpoint_shim_cases("sharded shim", SHARDED)
with h5py.File(sorted(glob.glob(os.path.join(sharded_run, "checkpoints", "step_*.h5")))[-1], "r") as f:
    c.check("[sharded shim] the sharded run's checkpoints are written in parallel (format version 2) and verify",
            f.attrs["format_version"] == 2 and len(f["checksum/parts"]) > len(f["manifest"]), "")
c.check("[sharded shim] every kept checkpoint verifies by the documented Python check",
        all(checkpoint_verifies(p) for p in glob.glob(os.path.join(sharded_run, "checkpoints", "step_*.h5"))), "")
corrupt_cases(sharded_run, "sharded corrupt", SHARDED)
data_corrupt_cases()
other_write_cases()
c.finish()
