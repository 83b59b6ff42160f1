"""Export and predict: a CNN with batch norm and dropout and an MLP trained on 2 ranks are
exported as safetensors + model.json; the documented Python loader (analysis/
hpctrain_model.py, safetensors package) rebuilds each and gets the same test-set
predictions as `hpctrain predict` on 2 ranks, whose HDF5 and CSV outputs agree and cover
the split. The same predictions come out of a pipeline of 2 stages (`predict --stages 2`), and
layouts that cannot run are refused naming the option."""
import csv
import json
import os
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, SOURCE, Checks, mpirun, run  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE, "analysis"))
from hpctrain_model import load, predict  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_export_")
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
with h5py.File(FASHION, "r") as f:
    test_images = f["/test/images"][()]
    test_labels = f["/test/labels"][()]

for name, model_args in (("cnn", ["model.channels=[8,16]", "model.fc_width=32"]),
                         ("mlp", ["model.name=mlp", "model.hidden=[64,32]", "model.dropout=0.1"]),
                         ("resnet", ["model.name=resnet", "model.width=8", "model.blocks=[1,1]",
                                     "model.block=bottleneck", "model.dropout=0.1", "model.checkpoint_every=1"]),
                         ("transformer", ["model.name=transformer", "model.embed_dim=32", "model.heads=4",
                                          "model.layers=2", "model.patch_size=7", "model.dropout=0.1",
                                          "optimizer.lr=0.002"]),
                         # A GPT-style decoder: causal attention, the last token's state to the head,
                         # GPT-2's tanh GELU.
                         ("transformer_causal", ["model.name=transformer", "model.embed_dim=32", "model.heads=4",
                                                 "model.layers=2", "model.patch_size=7", "model.dropout=0.1",
                                                 "optimizer.lr=0.002", "model.causal=true", "model.gelu=tanh"])):
    run_dir = os.path.join(work, name)
    r = mpirun(2, ["train", CONFIG, "data.path=" + FASHION, "data.limit_train=4000", "data.verify_hashes=false",
                   "train.epochs=1", "train.batch_size=64", "run.progress=none", "run.dir=" + run_dir] + model_args,
               timeout=300)
    c.check(f"[{name}] training exits 0", r.rc == 0, r.text[-2000:])
    r = run([BIN, "export", run_dir])
    c.check(f"[{name}] export exits 0", r.rc == 0 and "model.safetensors" in r.out, r.text)
    model_dir = os.path.join(run_dir, "export")
    d = json.load(open(os.path.join(model_dir, "model.json")))
    c.check(f"[{name}] model.json describes the model", d["format"] == "hpctrain-model" and d["outputs"] == 10 and
            d["sample_shape"] == [1, 28, 28] and len(d["class_names"]) == 10
            and d["model"]["name"] == name.split("_")[0], "")
    r = mpirun(2, ["predict", model_dir, FASHION, "--split", "test"], timeout=300)
    c.check(f"[{name}] predict on 2 ranks exits 0", r.rc == 0, r.text[-2000:])
    with h5py.File(os.path.join(model_dir, "predictions_test.h5"), "r") as f:
        scores = f["scores"][()]
        pred = f["prediction"][()]
        label = f["label"][()]
        index = f["index"][()]
    c.check(f"[{name}] predictions cover the test split in order",
            np.array_equal(index, np.arange(10000)) and np.array_equal(label, test_labels), "")
    rows = list(csv.DictReader(open(os.path.join(model_dir, "predictions_test.csv"))))
    c.check(f"[{name}] CSV equals the HDF5 file", len(rows) == 10000 and all(
        int(rows[i]["prediction"]) == pred[i] for i in range(0, 10000, 97)) and abs(
        float(rows[5]["score_3"]) - scores[5, 3]) < 1e-15, "")
    model, desc = load(model_dir)
    py = predict(model, desc, test_images).numpy()
    # Float32 rounding, not bitwise: other batch sizes and threads, other summation orders.
    # Measured 4.3e-7 (cnn), 2.6e-7 (mlp), 0 (resnet, transformer); docs/checkpoints.md.
    diff = float(np.abs(py - scores).max())
    agree = float(np.mean(py.argmax(1) == pred))
    c.check(f"[{name}] the Python loader gets the same predictions (max |diff| {diff:.1e}, {agree:.4f} argmax agree)",
            diff < 1e-5 and agree == 1.0, "")
    # Through 2 pipeline stages (each rank loads its stage's tensors): the pieces in order are
    # forward() bit for bit; only the rows per matrix product differ (10000 in microbatches of
    # 256 against 5000 per rank), so float32 rounding again.
    r = mpirun(2, ["predict", model_dir, FASHION, "--stages", "2", "--output", os.path.join(model_dir, "piped")],
               timeout=300)
    c.check(f"[{name}] predict through 2 pipeline stages exits 0 and names the split",
            r.rc == 0 and "2 stages x 1 replica: stem+blocks 0-" in r.out, r.text[-2000:])
    if r.rc == 0:
        with h5py.File(os.path.join(model_dir, "piped.h5"), "r") as f:
            piped, piped_label = f["scores"][()], f["label"][()]
        pdiff = float(np.abs(piped - scores).max()) if piped.shape == scores.shape else float("inf")
        c.check(f"[{name}] the pipeline's predictions equal the whole model's (max |diff| {pdiff:.1e})",
                pdiff < 1e-6 and np.array_equal(piped_label, test_labels) and
                np.array_equal(piped.argmax(1), pred), "")
    acc = float(np.mean(pred == test_labels))
    report = json.load(open(os.path.join(run_dir, "report.json")))
    c.check(f"[{name}] predicted accuracy {acc:.4f} equals the run's test accuracy",
            abs(acc - report["final"]["test_accuracy"]) < 1e-9, str(report["final"]["test_accuracy"]))
model_dir = os.path.join(work, "mlp", "export")  # 2 blocks
for args, expect in ((["--stages", "3"], "--stages 3 does not divide the 2 ranks"),
                     (["--stages", "2", "--stage-split", "5"], "--stage-split"),
                     (["--stage-split", "1"], "--stage-split needs --stages of 2 or more")):
    r = mpirun(2, ["predict", model_dir, FASHION] + args, timeout=120)
    c.check(f"predict {' '.join(args)}: refused naming the option",
            r.rc != 0 and expect in r.err and r.err.count("error") <= 2, r.text[-1500:])
r = run([BIN, "export", os.path.join(work, "nothing")])
c.check("export without checkpoints: a clear error", r.rc == 3 and "no checkpoint to export" in r.err, r.text)
c.finish()
