"""Model zoo regression: every image family reaches its documented Fashion-MNIST test
accuracy on 2 ranks (docs/models.md, "Accuracy"): the MLP config >= 89%, the CNN (fast
recipe, 4 epochs) >= 91%, and a small ResNet and a small Transformer, trained briefly,
their stated floors; the Transformer with device.attention=flash (LibTorch's CPU flash
kernel) reports it. The sequence families' floor (beating seasonal naive) is in
test_forecasting.py."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_zoo_")
RUNS = [
    ("mlp", "fashion_mnist_mlp.json", [], 0.89),
    ("cnn", "fashion_mnist_fast.json", ["train.epochs=4"], 0.91),
    ("resnet", "fashion_mnist_fast.json", ["model.name=resnet", "model.width=16", "model.blocks=[1,1,1]",
                                           "model.dropout=0", "train.epochs=2"], 0.88),
    ("transformer", "fashion_mnist_fast.json", ["model.name=transformer", "model.embed_dim=64", "model.heads=4",
                                                "model.layers=3", "model.patch_size=4", "model.dropout=0",
                                                "data.augment_flip=false", "data.augment_crop_padding=0",
                                                "optimizer.lr=0.002", "train.epochs=3", "device.attention=flash"],
     0.84),
]
for name, config, extra, floor in RUNS:
    d = os.path.join(work, name)
    r = mpirun(2, ["train", os.path.join(SOURCE, "configs", config), "data.path=" + FASHION, "run.progress=none",
                   "run.dir=" + d] + extra, timeout=1500)
    report = json.load(open(os.path.join(d, "report.json"))) if r.rc == 0 else {}
    acc = report.get("final", {}).get("test_accuracy", 0.0)
    seconds = report.get("training", {}).get("train_seconds", 0.0)
    print(f"{name}: test accuracy {acc:.4f} after {report.get('training', {}).get('epochs_run', 0)} epochs, "
          f"{seconds:.0f} s of training")
    c.check(f"{name} reaches {floor:.0%} test accuracy ({acc:.4f})",
            r.rc == 0 and acc >= floor, r.text[-2000:])
    backend = report.get("training", {}).get("attention_backend", "absent")
    want = "flash" if name == "transformer" else None  # device.attention=flash; no attention elsewhere
    c.check(f"{name}: report.json's training.attention_backend is {want} ({backend})", backend == want)
c.finish()
