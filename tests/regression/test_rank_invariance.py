"""Regression: a model without dropout or batch statistics gives the same losses for its
first 50 steps on 1, 2 and 4 ranks (within 1e-4 relative): the global batches, the
gradient average and the initial parameters do not depend on the rank count."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun, read_jsonl  # noqa: E402

c = Checks()
losses = {}
for np in (1, 2, 4):
    run_dir = tempfile.mkdtemp(prefix=f"hpctrain_inv{np}_")
    r = mpirun(np, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_mlp.json"), "data.path=" + FASHION,
                    "run.dir=" + run_dir, "model.dropout=0", "model.batch_norm=false", "train.max_steps=50",
                    "train.batch_size=96", "run.log_every=1", "run.threads=1", "run.progress=none",
                    "train.test_at_end=false", "data.augment_flip=true", "data.augment_crop_padding=2"], timeout=600)
    c.check(f"{np} ranks: exits 0", r.rc == 0, r.text[-3000:])
    if r.rc == 0:
        losses[np] = [l["loss"] for l in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if l["type"] == "step"]
        c.check(f"{np} ranks: 50 step losses", len(losses[np]) == 50, str(len(losses[np])))
if 1 in losses:
    for np in (2, 4):
        if np not in losses:
            continue
        worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses[1], losses[np]))
        print(f"{np} ranks: largest relative difference from 1 rank over 50 steps: {worst:.2e}")
        c.check(f"{np} ranks match 1 rank within 1e-4 relative", worst <= 1e-4, f"{worst}")
    c.check("training made progress", losses[1][-1] < 0.8 * losses[1][0], f"{losses[1][0]} -> {losses[1][-1]}")
c.finish()
