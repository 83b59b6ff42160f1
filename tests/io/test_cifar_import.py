"""`hpctrain import cifar10|cifar100`: small files in the official binary layout (records of
label byte(s) + 3072 CHW bytes) with known bytes, imported and read back pixel by pixel with
h5py; hashes as `inspect` verifies them; class names from the meta files or the defaults;
truncated, missing and out-of-range files named with the record; a short ResNet run on the
imported CIFAR-10 file."""
import hashlib
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, Checks, mpirun, run  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_cifar_")
rng = np.random.default_rng(7)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def records(n, label_columns):
    """n records: label bytes [n, len(label_columns)] (column k drawn below label_columns[k]) and images."""
    labels = np.stack([rng.integers(0, hi, n, dtype=np.uint8) for hi in label_columns], axis=1)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return labels, images


def write_batch(path, labels, images):
    with open(path, "wb") as f:
        for lab, img in zip(labels, images):
            f.write(lab.tobytes() + img.tobytes())


def read_back(path):
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in ("train/images", "train/labels", "test/images", "test/labels")}
        out["names"] = [s.decode() for s in f["class_names"][()]]
        out["num_classes"] = int(f.attrs["num_classes"])
        out["hashes"] = {k: f[k].attrs["sha256"] for k in ("train/images", "train/labels", "test/images", "test/labels")}
        out["hashes"] = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in out["hashes"].items()}
    return out


def hashes_ok(got):
    return all(hashlib.sha256(got[k].tobytes()).hexdigest() == got["hashes"][k] for k in got["hashes"])


# --- CIFAR-10: five training batches of different sizes, a test batch, no meta file ---------
src10 = os.path.join(work, "cifar-10-batches-bin")
os.makedirs(src10)
sizes = [7, 5, 6, 4, 3]
train_parts = [records(n, [10]) for n in sizes]
for b, (lab, img) in enumerate(train_parts, start=1):
    write_batch(os.path.join(src10, f"data_batch_{b}.bin"), lab, img)
test_lab, test_img = records(9, [10])
write_batch(os.path.join(src10, "test_batch.bin"), test_lab, test_img)
out10 = os.path.join(work, "cifar10.h5")
r = run([BIN, "import", "cifar10", "--source", src10, "--output", out10])
c.check("import cifar10 exits 0", r.rc == 0, r.text)
c.check("import cifar10 reports counts", "25 train and 9 test samples" in r.out, r.text)
got = read_back(out10)
want_train_img = np.concatenate([img for _, img in train_parts])
want_train_lab = np.concatenate([lab[:, 0] for lab, _ in train_parts]).astype(np.int32)
c.check("cifar10 train images: shape [N, 3, 32, 32] uint8",
        got["train/images"].shape == (25, 3, 32, 32) and got["train/images"].dtype == np.uint8,
        str(got["train/images"].shape))
c.check("cifar10 train: every pixel, batches in order 1..5", np.array_equal(got["train/images"], want_train_img))
c.check("cifar10 train: every label", got["train/labels"].dtype == np.int32 and
        np.array_equal(got["train/labels"], want_train_lab), str(got["train/labels"]))
c.check("cifar10 test: every pixel and label", np.array_equal(got["test/images"], test_img) and
        np.array_equal(got["test/labels"], test_lab[:, 0].astype(np.int32)))
c.check("cifar10 class names without batches.meta.txt are the published ones",
        got["names"] == CIFAR10_NAMES and got["num_classes"] == 10, str(got["names"]))
c.check("cifar10 hashes are the SHA-256 of the stored bytes", hashes_ok(got))
r = run([BIN, "inspect", out10])
c.check("inspect verifies all four hashes", r.rc == 0 and r.out.count("sha256 ok") == 4, r.text)

# Meta file: names read from it (blank trailing line as in the official archive).
meta_names = [f"class-{i}" for i in range(10)]
with open(os.path.join(src10, "batches.meta.txt"), "w") as f:
    f.write("\n".join(meta_names) + "\n\n")
out_meta = os.path.join(work, "cifar10-meta.h5")
r = run([BIN, "import", "cifar10", "--source", src10, "--output", out_meta])
c.check("class names from batches.meta.txt", r.rc == 0 and read_back(out_meta)["names"] == meta_names, r.text)

# A short ResNet run on the imported file: 3-channel 32x32 images through the whole trainer.
run_dir = os.path.join(work, "train")
r = mpirun(1, ["train", os.path.join(os.path.dirname(__file__), "..", "..", "configs", "cifar10_resnet.json"),
               "data.path=" + out10, "run.dir=" + run_dir, "train.epochs=1", "train.batch_size=8",
               "model.blocks=[1]", "model.width=4", "schedule.warmup_steps=0", "data.val_fraction=0.2",
               "run.progress=none"], timeout=300)
c.check("cifar10_resnet.json trains on the imported file", r.rc == 0 and
        os.path.exists(os.path.join(run_dir, "report.json")), r.text[-3000:])

# --- errors: truncated (named with the record), missing, label out of range ---------------
bad = os.path.join(work, "bad10")
shutil.copytree(src10, bad)
with open(os.path.join(bad, "data_batch_3.bin"), "r+b") as f:
    f.truncate(3073 * 4 + 100)
r = run([BIN, "import", "cifar10", "--source", bad, "--output", os.path.join(work, "x.h5")])
c.check("truncated batch: exit 3 naming the file and record 4",
        r.rc == 3 and "data_batch_3.bin" in r.err and "record 4" in r.err and "100 of its 3073" in r.err, r.text)
c.check("a failed import leaves no output", not os.path.exists(os.path.join(work, "x.h5")))
os.remove(os.path.join(bad, "data_batch_3.bin"))
r = run([BIN, "import", "cifar10", "--source", bad, "--output", os.path.join(work, "x.h5")])
c.check("missing batch: exit 3 naming it", r.rc == 3 and "data_batch_3.bin: missing" in r.err, r.text)
lab, img = records(3, [10])
lab[2, 0] = 10
write_batch(os.path.join(bad, "data_batch_3.bin"), lab, img)
r = run([BIN, "import", "cifar10", "--source", bad, "--output", os.path.join(work, "x.h5")])
c.check("label 10: exit 3 naming file, record and label",
        r.rc == 3 and "data_batch_3.bin: record 2 has label 10" in r.err, r.text)
r = run([BIN, "import", "cifar10", "--source", os.path.join(work, "nowhere")])
c.check("missing folder: exit 3", r.rc == 3 and "no such folder" in r.err, r.text)
r = run([BIN, "import", "cifar10"])
c.check("--source is required: exit 2", r.rc == 2 and "--source" in r.text, r.text)

# --- CIFAR-100: coarse + fine label bytes; fine (default) and coarse labels -----------------
src100 = os.path.join(work, "cifar-100-binary")
os.makedirs(src100)
tr_lab, tr_img = records(11, [20, 100])
te_lab, te_img = records(6, [20, 100])
write_batch(os.path.join(src100, "train.bin"), tr_lab, tr_img)
write_batch(os.path.join(src100, "test.bin"), te_lab, te_img)
fine_names = [f"fine_{i}" for i in range(100)]
with open(os.path.join(src100, "fine_label_names.txt"), "w") as f:
    f.write("\n".join(fine_names) + "\n")
out100 = os.path.join(work, "cifar100.h5")
r = run([BIN, "import", "cifar100", "--source", src100, "--output", out100])
c.check("import cifar100 exits 0", r.rc == 0 and "11 train and 6 test samples" in r.out, r.text)
got = read_back(out100)
c.check("cifar100: every pixel", np.array_equal(got["train/images"], tr_img) and
        np.array_equal(got["test/images"], te_img))
c.check("cifar100: fine labels (second byte)", np.array_equal(got["train/labels"], tr_lab[:, 1].astype(np.int32)) and
        np.array_equal(got["test/labels"], te_lab[:, 1].astype(np.int32)))
c.check("cifar100: 100 classes named from fine_label_names.txt", got["num_classes"] == 100 and
        got["names"] == fine_names, str(got["names"][:5]))
c.check("cifar100 hashes", hashes_ok(got))
out_coarse = os.path.join(work, "cifar100-coarse.h5")
r = run([BIN, "import", "cifar100", "--source", src100, "--labels", "coarse", "--output", out_coarse])
got = read_back(out_coarse) if r.rc == 0 else None
c.check("cifar100 --labels coarse: first byte, 20 classes numbered without coarse_label_names.txt",
        got is not None and np.array_equal(got["train/labels"], tr_lab[:, 0].astype(np.int32)) and
        got["num_classes"] == 20 and got["names"] == [str(i) for i in range(20)], r.text)
with open(os.path.join(src100, "test.bin"), "ab") as f:
    f.write(b"\x01")
r = run([BIN, "import", "cifar100", "--source", src100, "--output", os.path.join(work, "y.h5")])
c.check("cifar100 truncated test.bin: record 6 named", r.rc == 3 and "test.bin" in r.err and "record 6" in r.err
        and "1 of its 3074" in r.err, r.text)
with open(os.path.join(src100, "fine_label_names.txt"), "w") as f:
    f.write("a\nb\n")
r = run([BIN, "import", "cifar100", "--source", src100, "--output", os.path.join(work, "y.h5")])
c.check("a names file with the wrong count is an error", r.rc == 3 and "fine_label_names.txt: 2 class names" in r.err,
        r.text)
shutil.rmtree(work, ignore_errors=True)
c.finish()
