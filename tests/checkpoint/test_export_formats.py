"""ONNX and TorchScript: for each of the 8 model families (mlp, cnn, resnet, transformer on
Fashion-MNIST; lstm, bilstm, cnn_bilstm and the forecaster with quantile outputs on a
synthetic series), a briefly trained model is exported, turned into model.onnx and
model.torchscript.pt by analysis/export_formats.py, and the ONNX file run in onnxruntime and
the TorchScript file in LibTorch C++ (tests/checkpoint/torchscript_run.cpp) give what
`hpctrain predict` gives on the whole test split, to 1e-5 (probabilities: absolute;
regression values in the target's units: relative to max(1, |value|), float32's rounding
of values in the tens)."""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, mpirun, run  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:  # scripts/requirements.txt pins it; a bare environment skips
    print("onnxruntime is not installed: skipped")
    sys.exit(77)

RUNNER = sys.argv[1]  # torchscript_run
c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_formats_")
series = os.path.join(work, "cpu.h5")
series3 = os.path.join(work, "cpu3.h5")
for path, extra in ((series, []), (series3, ["--span", "3"])):
    r = run([BIN, "import", "synthetic", "cpu", "--length", "1500", "--window", "24", "--seed", "2", "--output", path]
            + extra)
    c.check(f"import synthetic {os.path.basename(path)}", r.rc == 0, r.text)

IMAGES = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
SERIES = os.path.join(SOURCE, "configs", "forecast_lstm.json")
image_run = [FASHION, IMAGES, ["data.limit_train=2000", "train.batch_size=64"]]
series_run = [series, SERIES, ["train.batch_size=64", "model.hidden_size=8", "model.rnn_layers=2"]]
cases = [
    ("mlp", image_run, ["model.name=mlp", "model.hidden=[32]", "model.dropout=0.1"]),
    ("cnn", image_run, ["model.channels=[4,8]", "model.fc_width=16"]),
    ("resnet", image_run, ["model.name=resnet", "model.width=4", "model.blocks=[1,1]", "model.stem=imagenet"]),
    ("transformer", image_run, ["model.name=transformer", "model.embed_dim=16", "model.heads=2", "model.layers=1",
                                "model.patch_size=7", "optimizer.lr=0.002"]),
    ("lstm", series_run, ["model.name=lstm"]),
    ("bilstm", series_run, ["model.name=bilstm", "train.loss=huber"]),
    ("cnn_bilstm", series_run, ["model.name=cnn_bilstm", "model.channels=[4]"]),
    ("forecaster", [series3] + series_run[1:], ["model.name=forecaster", "model.heads=2", "train.loss=quantile"]),
]


def write_tensor(path, a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    with open(path, "wb") as f:
        f.write(np.array([a.ndim] + list(a.shape), dtype="<i8").tobytes() + a.astype("<f4").tobytes())


def max_diff(got, want):
    if got.shape != want.shape:
        return float("inf")
    return float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max())


def read_tensor(path):
    raw = open(path, "rb").read()
    ndims = int(np.frombuffer(raw[:8], "<i8")[0])
    dims = np.frombuffer(raw[8:8 + 8 * ndims], "<i8")
    return np.frombuffer(raw[8 + 8 * ndims:], "<f4").reshape(dims)


for name, (data, config, common), extra in cases:
    run_dir = os.path.join(work, name)
    r = mpirun(2, ["train", config, "data.path=" + data, "data.verify_hashes=false", "train.epochs=1",
                   "run.progress=none", "run.dir=" + run_dir] + common + extra, timeout=300)
    c.check(f"[{name}] training exits 0", r.rc == 0, r.text[-2000:])
    r = run([BIN, "export", run_dir])
    model_dir = os.path.join(run_dir, "export")
    c.check(f"[{name}] export exits 0", r.rc == 0, r.text)
    r = mpirun(2, ["predict", model_dir, data, "--split", "test"], timeout=300)
    c.check(f"[{name}] predict exits 0", r.rc == 0, r.text[-2000:])
    with h5py.File(os.path.join(model_dir, "predictions_test.h5"), "r") as f:
        want = f["scores"][()] if "scores" in f else f["quantiles"][()] if "quantiles" in f else f["prediction"][()]
    with h5py.File(data, "r") as f:
        inputs = (f["/test/images"] if "images" in f["test"] else f["/test/features"])[()].astype(np.float32)
    r = run([sys.executable, os.path.join(SOURCE, "analysis", "export_formats.py"), model_dir], timeout=300)
    onnx_path, ts_path = os.path.join(model_dir, "model.onnx"), os.path.join(model_dir, "model.torchscript.pt")
    c.check(f"[{name}] export_formats.py writes both files", r.rc == 0 and os.path.exists(onnx_path) and
            os.path.exists(ts_path), r.text[-2000:])
    if r.rc != 0:
        continue
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs})[0]
    diff = max_diff(got, want)
    c.check(f"[{name}] onnxruntime equals hpctrain predict {want.shape} (max |diff| {diff:.1e})", diff <= 1e-5,
            f"{got.shape} vs {want.shape}")
    write_tensor(os.path.join(work, "in.bin"), inputs)
    p = subprocess.run([RUNNER, ts_path, os.path.join(work, "in.bin"), os.path.join(work, "out.bin")],
                       capture_output=True, text=True, timeout=300)
    c.check(f"[{name}] LibTorch C++ loads and runs the TorchScript file", p.returncode == 0, p.stderr)
    if p.returncode == 0:
        got = read_tensor(os.path.join(work, "out.bin"))
        diff = max_diff(got, want)
        c.check(f"[{name}] TorchScript in C++ equals hpctrain predict (max |diff| {diff:.1e})", diff <= 1e-5,
                f"{got.shape} vs {want.shape}")
r = run([sys.executable, os.path.join(SOURCE, "analysis", "export_formats.py"), work, "--formats", "x"])
c.check("export_formats.py: a bad argument is an error", r.rc != 0, r.text)
c.finish()
