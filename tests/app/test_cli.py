"""The command line: version, help, import of idx and idx.gz files, inspect, config
reference, and the HDF5 layout read by h5py with its hashes checked by hashlib."""
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, make_idx_dir, mpirun, run  # noqa: E402

c = Checks()
r = run([BIN, "--version"])
c.check("--version exits 0", r.rc == 0, r.text)
for word in ("LibTorch 2.", "Open MPI", "HDF5", "(parallel)", "CUDA", "NCCL"):
    c.check(f"--version names {word}", word in r.out, r.out)

for cmd in (["--help"], ["train", "--help"], ["import", "--help"], ["inspect", "--help"], ["config", "--help"]):
    r = run([BIN] + cmd)
    c.check(f"{' '.join(cmd)} prints usage", r.rc == 0 and "usage: hpctrain" in r.out, r.text)
r = run([BIN, "frobnicate"])
c.check("unknown command is a usage error", r.rc == 2 and 'unknown command "frobnicate"' in r.err, r.text)

# Every command's help comes from its definition: usage line, arguments and options.
COMMANDS = (["train"], ["import"], ["import", "fashion-mnist"], ["import", "mnist"], ["import", "csv"],
            ["import", "timeseries"], ["import", "synthetic"], ["inspect"], ["config"], ["export"], ["predict"],
            ["search-merge"], ["plan"], ["bench"], ["bench", "allreduce"], ["bench", "io"], ["bench", "checkpoint"],
            ["bench", "activations"], ["help"])
for cmd in COMMANDS:
    r = run([BIN] + cmd + ["--help"])
    c.check(f"{' '.join(cmd)} --help: exit 0, its usage line on stdout",
            r.rc == 0 and r.out.startswith("usage: hpctrain " + " ".join(cmd)) and r.err == "", r.text)
    listed = cmd[-1] in run([BIN] + cmd[:-1] + ["--help"]).out
    c.check(f"{' '.join(cmd)} is listed in its parent's help", listed, "")
r = run([BIN, "help", "import", "csv"])
c.check("help import csv is import csv --help", r.rc == 0 and r.out == run([BIN, "import", "csv", "--help"]).out,
        r.text)
r = mpirun(2, ["train", "--help"])
c.check("help is printed once under mpirun", r.rc == 0 and r.out.count("usage: hpctrain train") == 1, r.text)

# Usage errors: exit 2, one line naming the command and what is wrong, once per job.
BAD = ((["train", "--frobnicate", "x.json"], "train: unknown option --frobnicate"),
       (["train"], "train: CONFIG is required"),
       (["inspect", "a.h5", "b.h5"], 'inspect: unexpected argument "b.h5"'),
       (["import"], "import: name the data set kind"),
       (["import", "weather"], 'import: unknown data set kind "weather"'),
       (["import", "csv", "t.csv"], "import csv: --label is required"),
       (["import", "csv", "t.csv", "--label", "y", "--test-fraction", "1.5"],
        'import csv: --test-fraction expects a number in (0, 1), found "1.5"'),
       (["import", "timeseries", "s.csv", "--target", "y", "--window", "0"],
        'import timeseries: --window expects an integer >= 1, found "0"'),
       (["import", "mnist", "--output"], "import mnist: --output"),
       (["predict", "m", "x.h5", "--split", "valid"], 'predict: --split expects test or train, found "valid"'),
       (["bench", "io"], "bench io: FILE is required"),
       (["bench", "nothing"], 'bench: unknown benchmark "nothing"'),
       (["bench", "allreduce", "--repeats", "0"], 'bench allreduce: --repeats expects an integer >= 1, found "0"'),
       (["config", "--docs", "x.json"], "config: --docs excludes CONFIG"),
       (["--frobnicate"], "unknown option --frobnicate"))
for args, message in BAD:
    r = mpirun(2, args)
    lines = [line for line in r.err.splitlines() if line.startswith("hpctrain:")]
    c.check(f"{' '.join(args)}: exit 2 with one message",
            r.rc == 2 and len(lines) == 1 and message in lines[0] and r.out == "", r.text)
for bare in (["plan"], ["bench"], ["config"]):
    r = run([BIN] + bare)
    c.check(f"{bare[0]} alone prints its usage and exits 2",
            r.rc == 2 and r.out.startswith("usage: hpctrain " + bare[0]), r.text)
r = run([BIN])
c.check("hpctrain alone prints the usage and exits 2", r.rc == 2 and r.out.startswith("usage: hpctrain"), r.text)
r = run([BIN, "help"])
c.check("help prints the usage and exits 0",
        r.rc == 0 and r.out.startswith("usage: hpctrain") and "search-merge" in r.out, r.text)

r = run([BIN, "config", "--docs"])
with open(os.path.join(SOURCE, "docs", "config.md")) as f:
    c.check("docs/config.md is generated from the schema", r.out == f.read(), "regenerate with config --docs")

# idx and idx.gz both import, to the same data.
src = make_idx_dir(n_train=40, n_test=12)
plain = tempfile.mkdtemp(prefix="hpctrain_plain_")
for name in os.listdir(src):
    with gzip.open(os.path.join(src, name)) as fin, open(os.path.join(plain, name[:-3]), "wb") as fout:
        shutil.copyfileobj(fin, fout)
# b.h5 goes into folders that do not exist yet: import creates them.
out_gz, out_plain = os.path.join(src, "a.h5"), os.path.join(plain, "new", "sub", "b.h5")
r1 = run([BIN, "import", "mnist", "--source", src, "--output", out_gz])
r2 = run([BIN, "import", "mnist", "--source", plain, "--output", out_plain])
c.check("import of idx.gz and idx succeeds", r1.rc == 0 and r2.rc == 0, r1.text + r2.text)
i1, i2 = run([BIN, "inspect", out_gz]), run([BIN, "inspect", out_plain])
c.check("idx and idx.gz give identical hashes",
        i1.rc == 0 and [l for l in i1.out.splitlines() if "sha256" in l] ==
        [l for l in i2.out.splitlines() if "sha256" in l], i1.text + i2.text)
r = run([BIN, "import", "mnist", "--source", "/nonexistent", "--output", "/tmp/x.h5"])
c.check("import from a missing folder names it", r.rc != 0 and "/nonexistent: no such folder" in r.err, r.text)

try:
    import h5py  # noqa: E402
except ImportError:
    h5py = None
c.check("h5py is available in the project environment", h5py is not None, "pip install h5py")
if h5py is not None:
    with h5py.File(FASHION, "r") as f:
        c.check("h5py reads the layout", f["train/images"].shape == (60000, 1, 28, 28) and
                f["train/labels"].dtype.name == "int32" and f.attrs["format"] in (b"hpctrain-dataset", "hpctrain-dataset"), "")
        for name in ("train/images", "train/labels", "test/images", "test/labels"):
            ds = f[name]
            stored = ds.attrs["sha256"]
            stored = stored.decode() if isinstance(stored, bytes) else stored
            c.check(f"hashlib agrees with {name}@sha256", hashlib.sha256(ds[()].tobytes()).hexdigest() == stored, "")
        names = [n.decode() if isinstance(n, bytes) else n for n in f["class_names"][()]]
        c.check("class names stored", names[0] == "T-shirt/top" and names[9] == "Ankle boot", str(names))
        c.check("images are chunked by whole samples", f["train/images"].chunks[1:] == (1, 28, 28), "")
# Benchmarks run and check their own results (figures are for docs/benchmarks.md, not here).
r = mpirun(2, ["bench", "allreduce", "--min-bytes", "4096", "--max-bytes", "65536", "--repeats", "1"])
c.check("bench allreduce runs and checks its sums", r.rc == 0, r.text[-1500:])
r = mpirun(2, ["bench", "io", FASHION, "--repeats", "1"])
c.check("bench io runs", r.rc == 0, r.text[-1500:])
r = mpirun(2, ["bench", "checkpoint", tempfile.mkdtemp(prefix="hpctrain_bench_"), "--max-bytes", "262144",
               "--repeats", "1"])
c.check("bench checkpoint runs and both files read back equal", r.rc == 0 and "read back equal: yes" in r.out,
        r.text[-1500:])
# bench kernels on the CPU: the fused operators' reference loops against ATen and a float64
# reference, every case within its tolerance, the figures as JSON.
kjson = os.path.join(tempfile.mkdtemp(prefix="hpctrain_kernels_"), "k.json")
r = run([BIN, "bench", "kernels", "--device", "cpu", "--rows", "64", "--dim", "48", "--classes", "50",
         "--repeats", "1", "--json", kjson])
cases = json.load(open(kjson))["cases"] if r.rc == 0 else []
c.check("bench kernels --device cpu: add_layer_norm, cross_entropy and mlp_gelu_tanh in every type within tolerance, "
        "as JSON", r.rc == 0 and len(cases) == 13 and all(k["error"] for k in cases) and "cross_entropy bfloat16" in r.out
        and "mlp_gelu_tanh float16" in r.out,
        r.text[-2000:])
c.finish()
