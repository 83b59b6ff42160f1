"""parallel.shard (ZeRO stages 1, 2 and 3) trains what unsharded data parallelism trains: the
same losses within 1e-5 relative over 100 steps for the CNN, ResNet and Transformer families
on 2 ranks and the CNN on 4 (uneven shards: padded buckets), with gradient clipping over the
shards, gradient checkpointing and pipeline stages; each rank's optimizer state is 1/N of
the unsharded total (+-5%), measured from its tensors, and with stage 3 so are its parameters
(a block's gathered window apart). Checkpoints hold the whole state, as
an unsharded run writes it: a stage-2 run on 4 ranks killed with SIGKILL resumes bitwise,
and its checkpoint continues on 2 ranks sharded, on 1 rank and unsharded on 4. Bad
settings fail on every rank with the key named. Stage 3 writes the same checkpoints as stage 2,
bit for bit, and resumes its own bitwise. Checkpoints written in parallel (every rank its slices,
format version 2; checkpoint.parallel_write, the default) hold the same datasets bit for bit as
when the first rank gathers and writes alone, also on a 2 x 2 pipeline grid; a resume reads only
its chunks of the optimizer state."""
import json
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import (BIN, FASHION, MPIEXEC, SOURCE, Checks, checkpoint_tensors,  # noqa: E402
                     kill_once_written, mpirun, newest_checkpoint, read_jsonl, run)

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json")
work = tempfile.mkdtemp(prefix="hpctrain_shard_")
common = ["data.path=" + FASHION, "data.verify_hashes=false", "data.limit_train=3200", "run.progress=none",
          "train.epochs=2", "train.batch_size=32", "train.max_steps=100", "run.log_every=10",
          "train.early_stop_patience=0", "run.threads=1", "model.dropout=0", "comm.bucket_mb=0.05"]
FAMILIES = {
    "cnn": ["model.channels=[8,16]", "model.fc_width=32"],
    "resnet": ["model.name=resnet", "model.width=8", "model.blocks=[1,1]", "model.checkpoint_every=1",
               "optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"],
    "transformer": ["model.name=transformer", "model.embed_dim=32", "model.heads=4", "model.layers=2",
                    "model.patch_size=7", "train.grad_clip_norm=0.5", "optimizer.lr=0.002"],
}


def train(name, np_, *extra, timeout=300):
    run_dir = os.path.join(work, name)
    r = mpirun(np_, ["train", CONFIG, *common, "run.dir=" + run_dir, *extra], timeout=timeout)
    return r, run_dir


def losses(run_dir):
    return np.array([line["loss"] for line in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
                     if line["type"] == "step"])


def shard_report(run_dir):
    return json.load(open(os.path.join(run_dir, "report.json")))["parallel"]["shard"]


def worst_relative(a, b):
    if len(a) == 0 or a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b) / np.abs(b)))


for family, args in FAMILIES.items():
    for np_ in (2, 4) if family == "cnn" else (2,):
        r, base = train(f"{family}_none_{np_}", np_, *args)
        ok = r.rc == 0
        c.check(f"[{family}, {np_} ranks] unsharded reference trains", ok, r.text[-2000:])
        ref = losses(base) if ok else np.array([])
        whole = shard_report(base)["optimizer_state_bytes"] if ok else [0]
        whole_params = shard_report(base)["parameter_bytes"][0] if ok else 0
        for stage in ("optimizer", "gradients", "parameters"):
            r, d = train(f"{family}_{stage}_{np_}", np_, *args, "parallel.shard=" + stage)
            got = losses(d) if r.rc == 0 else np.array([])
            worst = worst_relative(got, ref)
            c.check(f"[{family}, {np_} ranks] shard={stage}: {len(got)} logged losses within 1e-5 relative of "
                    f"unsharded (worst {worst:.1e})", r.rc == 0 and len(got) == len(ref) > 0 and worst <= 1e-5,
                    r.text[-2000:])
            if r.rc != 0:
                continue
            rep = shard_report(d)
            share = [b / (whole[0] / np_) for b in rep["optimizer_state_bytes"]]
            c.check(f"[{family}, {np_} ranks] shard={stage}: each rank's optimizer state is 1/{np_} of "
                    f"{whole[0]} bytes (ratios {[round(s, 3) for s in share]})",
                    rep["active"] and all(abs(s - 1) <= 0.05 for s in share), json.dumps(rep))
            if stage == "parameters":
                share = [b / (whole_params / np_) for b in rep["parameter_bytes"]]
                window = rep["parameter_window_peak_bytes"]
                c.check(f"[{family}, {np_} ranks] shard=parameters: each rank holds 1/{np_} of the {whole_params} "
                        f"parameter bytes between steps (ratios {[round(x, 3) for x in share]}), gathering at most "
                        f"{max(window)} at once", all(abs(x - 1) <= 0.05 for x in share)
                        and all(0 < w < whole_params for w in window), json.dumps(rep))
            if stage == "gradients":
                flat = rep["parameter_bytes"][0]
                c.check(f"[{family}, {np_} ranks] shard=gradients keeps only gradient chunks between steps "
                        f"({rep['gradient_bytes'][0]} of {flat} bytes)",
                        all(abs(g * np_ / flat - 1) <= 0.05 for g in rep["gradient_bytes"]), json.dumps(rep))

# hpctrain plan predicts each rank's optimizer state and gradient chunks for every stage:
# within 5% of what the 4-rank CNN runs measured.
r = run([BIN, "plan", CONFIG, *common, *FAMILIES["cnn"], "--ranks", "4"], timeout=300)
table = {m.group(1): [float(x) for x in m.group(2, 3, 4)] for m in
         re.finditer(r"^(none|optimizer|gradients|parameters)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", r.out, re.M)}
for stage in ("none", "optimizer", "gradients", "parameters"):
    rep = shard_report(os.path.join(work, f"cnn_{stage}_4"))
    measured = [max(rep["optimizer_state_bytes"]) / 2**20, max(rep["gradient_bytes"]) / 2**20,
                max(rep["parameter_bytes"]) / 2**20]
    predicted = table.get(stage, [0, 0, 0])
    c.check(f"plan, shard={stage} on 4 ranks: optimizer state {predicted[2]} MiB, gradients {predicted[1]} MiB, "
            f"parameters {predicted[0]} MiB per rank predicted; measured {measured[0]:.3f}, {measured[1]:.3f}, "
            f"{measured[2]:.3f}", r.rc == 0 and all(abs(predicted[2 - i] - measured[i]) <= 0.05 * measured[i] + 0.002
                                                   for i in range(3)), r.text[-2000:])

# Pipeline stages x sharded replicas: 2 stages x 2 replicas.
grid = ["parallel.pipeline_stages=2", "parallel.microbatches=2", "parallel.stage_split=[1]"]
r, base = train("grid_none", 4, *FAMILIES["cnn"], *grid)
r2, d = train("grid_gradients", 4, *FAMILIES["cnn"], *grid, "parallel.shard=gradients", "train.grad_clip_norm=0.5")
r3, base_clip = train("grid_none_clip", 4, *FAMILIES["cnn"], *grid, "train.grad_clip_norm=0.5")
worst = worst_relative(losses(d), losses(base_clip)) if r2.rc == 0 and r3.rc == 0 else float("inf")
c.check(f"2 stages x 2 sharded replicas with clipping match the unsharded grid (worst {worst:.1e})",
        r.rc == 0 and worst <= 1e-5, r2.text[-2000:])
r4, d = train("grid_parameters", 4, *FAMILIES["cnn"], *grid, "parallel.shard=parameters", "train.grad_clip_norm=0.5")
worst = worst_relative(losses(d), losses(base_clip)) if r4.rc == 0 and r3.rc == 0 else float("inf")
c.check(f"2 stages x 2 replicas with shard=parameters and clipping match the unsharded grid (worst {worst:.1e})",
        r4.rc == 0 and worst <= 1e-5, r4.text[-2000:])

# Checkpoints: stage 2 on 4 ranks, killed after the step-40 checkpoint, resumed bitwise.
ck = ["checkpoint.every_steps=20", "checkpoint.keep=100", "model.dropout=0.25"]
r, ref_dir = train("ck_ref", 4, *FAMILIES["cnn"], *ck, "parallel.shard=gradients")
c.check("stage 2 on 4 ranks with checkpoints trains", r.rc == 0, r.text[-2000:])
ref = checkpoint_tensors(newest_checkpoint(ref_dir))
# Unsharded runs step ATen's fused AdamW by default (optimizer.fused=auto), sharded ones their
# chunks with LibTorch's loop: the loop on both sides, for equal rounding.
LOOP = "optimizer.fused=off"
r, plain_dir = train("ck_plain", 4, *FAMILIES["cnn"], *ck, "train.max_steps=20", LOOP)
plain = checkpoint_tensors(newest_checkpoint(plain_dir), ("model/", "optimizer/"))
first = checkpoint_tensors(os.path.join(ref_dir, "checkpoints", "step_%010d.h5" % 20), ("model/", "optimizer/"))
worst = max((float(np.max(np.abs(first[k] - v) / (np.abs(v) + 1e-6))) for k, v in plain.items() if k in first),
            default=float("inf"))
c.check(f"its checkpoint holds the whole per-parameter state an unsharded run writes, the same values within "
        f"float rounding (worst {worst:.1e})",
        r.rc == 0 and plain.keys() == first.keys() and all(plain[k].shape == first[k].shape for k in plain)
        and worst < 1e-4, str(sorted(set(plain) ^ set(first))[:10]))

# checkpoint.parallel_write (the default): every rank writes its slices of the state (format
# version 2, a checksum per part); the same datasets, bit for bit, as when the first rank
# gathers the state and writes alone (version 1). Also on a 2 x 2 pipeline grid.
def same_files(parallel_file, serial_file):
    import h5py
    a, b = checkpoint_tensors(parallel_file), checkpoint_tensors(serial_file)
    with h5py.File(parallel_file, "r") as f, h5py.File(serial_file, "r") as g:
        versions = (int(f.attrs["format_version"]), int(g.attrs["format_version"]))
        parts = len(f["checksum/parts"]) if "checksum" in f else 0
    diff = [k for k in b if k not in a or not np.array_equal(a[k], b[k])]
    return versions, parts, diff, a.keys() == b.keys() and len(a) > 0


short = [*FAMILIES["cnn"], *ck, "parallel.shard=gradients", "train.max_steps=20"]
r, parallel_dir = train("ck_parallel", 4, *short)
r2, serial_dir = train("ck_serial", 4, *short, "checkpoint.parallel_write=false")
versions, parts, diff, same_keys = (same_files(newest_checkpoint(parallel_dir), newest_checkpoint(serial_dir))
                                    if r.rc == 0 and r2.rc == 0 else ((0, 0), 0, ["no file"], False))
c.check(f"stage 2 on 4 ranks: the checkpoint written in parallel (version {versions[0]}, {parts} checksum parts) "
        f"holds the serial one's (version {versions[1]}) datasets bit for bit (differ: {diff[:5]})",
        versions == (2, 1) and same_keys and not diff, r.text[-1500:] + r2.text[-1500:])
grid_ck = [*grid, "parallel.shard=gradients", "checkpoint.every_steps=20", "train.max_steps=20"]
r, gp = train("grid_ck_parallel", 4, *FAMILIES["cnn"], *grid_ck)
r2, gs = train("grid_ck_serial", 4, *FAMILIES["cnn"], *grid_ck, "checkpoint.parallel_write=false")
versions, parts, diff, same_keys = (same_files(newest_checkpoint(gp), newest_checkpoint(gs))
                                    if r.rc == 0 and r2.rc == 0 else ((0, 0), 0, ["no file"], False))
c.check(f"2 stages x 2 sharded replicas: the parallel checkpoint holds the serial one's datasets bit for bit "
        f"(versions {versions}, differ: {diff[:5]})", versions == (2, 1) and same_keys and not diff,
        r.text[-1500:] + r2.text[-1500:])

kill_dir = os.path.join(work, "ck_killed")
cmd = [MPIEXEC, "-n", "4", "--oversubscribe", BIN, "train", CONFIG, *common, *FAMILIES["cnn"], *ck,
       "parallel.shard=gradients", "run.dir=" + kill_dir]
want = os.path.join(kill_dir, "checkpoints", "step_%010d.h5" % 40)
seen, gone = kill_once_written(cmd, want)
c.check("killed with SIGKILL after the step-40 checkpoint, before the end",
        seen and gone and not os.path.exists(os.path.join(kill_dir, "report.json")), "")
r, _ = train("ck_killed", 4, *FAMILIES["cnn"], *ck, "parallel.shard=gradients", "checkpoint.resume=auto")
got = checkpoint_tensors(newest_checkpoint(kill_dir)) if r.rc == 0 else {}
diff = [k for k in ref if k not in got or not np.array_equal(ref[k], got[k])]
c.check("resumed on the same layout, every tensor of the final checkpoint is bitwise the uninterrupted run's",
        r.rc == 0 and got.keys() == ref.keys() and not diff, (r.text[-1500:] if r.rc else str(diff[:10])))

# Another layout continues a stage-2 checkpoint and ends where the uninterrupted run does,
# within float tolerance (other summation orders). Without dropout and batch norm: their
# per-rank draws and per-replica batch statistics make another layout another trajectory.
flat = ["model.dropout=0", "model.batch_norm=false", "checkpoint.every_steps=20", "checkpoint.keep=100"]
r, flat_dir = train("flat_ref", 4, *FAMILIES["cnn"], *flat, "parallel.shard=gradients")
c.check("stage 2 on 4 ranks without dropout and batch norm trains", r.rc == 0, r.text[-2000:])
final = checkpoint_tensors(newest_checkpoint(flat_dir), ("model/",)) if r.rc == 0 else {}
source = os.path.join(flat_dir, "checkpoints", "step_%010d.h5" % 40)
for name, np_, extra in (("4 -> 2 ranks, shard=gradients", 2, ["parallel.shard=gradients"]),
                         ("4 -> 1 rank", 1, []),
                         ("4 -> 4 ranks unsharded", 4, []),
                         ("4 -> 4 ranks, shard=optimizer", 4, ["parallel.shard=optimizer"]),
                         ("4 -> 2 ranks, shard=parameters", 2, ["parallel.shard=parameters"])):
    r, d = train("cross_" + name.replace(" ", "_").replace(">", "").replace(",", ""), np_, *FAMILIES["cnn"], *flat,
                 *extra, "checkpoint.resume=" + source)
    end = checkpoint_tensors(newest_checkpoint(d), ("model/",)) if r.rc == 0 else {}
    worst = max((float(np.max(np.abs(end[k] - v) / (np.abs(v) + 1e-3))) for k, v in final.items() if k in end),
                default=float("inf"))
    c.check(f"{name}: resumes from the sharded checkpoint and ends within 1e-3 relative of the uninterrupted run "
            f"(worst {worst:.1e})", r.rc == 0 and "resuming from" in r.out and end.keys() == final.keys()
            and worst < 1e-3, r.text[-2000:])

# Stage 3 computes what stage 2 computes: the same checkpoints, bit for bit; and a resume of its
# own step-40 checkpoint ends bitwise where it ends.
r, p3_dir = train("p3_ref", 4, *FAMILIES["cnn"], *flat, "parallel.shard=parameters")
p3 = checkpoint_tensors(newest_checkpoint(p3_dir)) if r.rc == 0 else {}
p2 = checkpoint_tensors(newest_checkpoint(flat_dir))
diff = [k for k in p2 if k not in p3 or not np.array_equal(p2[k], p3[k])]
c.check(f"stage 3 on 4 ranks writes stage 2's final checkpoint bit for bit ({len(p3)} datasets; differ: {diff[:5]})",
        r.rc == 0 and p3.keys() == p2.keys() and not diff, r.text[-2000:])
r, d = train("p3_resumed", 4, *FAMILIES["cnn"], *flat, "parallel.shard=parameters",
             "checkpoint.resume=" + os.path.join(p3_dir, "checkpoints", "step_%010d.h5" % 40))
got = checkpoint_tensors(newest_checkpoint(d)) if r.rc == 0 else {}
diff = [k for k in p3 if k not in got or not np.array_equal(p3[k], got[k])]
c.check("stage 3 resumed from its step-40 checkpoint ends bitwise where it ended",
        r.rc == 0 and got.keys() == p3.keys() and not diff, (r.text[-1500:] if r.rc else str(diff[:10])))

# Stage 3 gathers pieces collectively in every forward, evaluation included, where the replicas'
# shares of a split may take different numbers of batches: 10000 test rows over 3 ranks in
# batches of 3333 are 2, 1 and 1 batches. Without matching the gathers this hangs (the watchdog
# would end it); with it the test figures equal the unsharded run's.
uneven = ["train.max_steps=10", "train.eval_batch_size=3333", "comm.timeout=60"]
r, d3 = train("uneven_parameters", 3, *FAMILIES["cnn"], *uneven, "parallel.shard=parameters", timeout=200)
r0, d0 = train("uneven_none", 3, *FAMILIES["cnn"], *uneven, timeout=200)
tests = [json.load(open(os.path.join(d, "report.json")))["final"].get("test_loss") if rc == 0 else None
         for d, rc in ((d3, r.rc), (d0, r0.rc))]
c.check(f"3 replicas evaluating 2, 1 and 1 batches with shard=parameters: test loss {tests[0]} equals unsharded "
        f"{tests[1]} within 1e-6", None not in tests and abs(tests[0] - tests[1]) <= 1e-6 * abs(tests[1]),
        r.text[-2000:])

# Stage 3 through the paths that read or write whole parameters mid-run: the best epoch's
# checkpoint (checkpoint.keep_best), early stopping that puts the best weights back before the
# test, microbatches without a pipeline and channels-last CNN parameters. (min_delta 0.5: no
# epoch after the first improves by that much, so early stopping ends every trajectory.)
mixed = ["data.limit_train=1600", "train.epochs=4", "train.max_steps=0", "parallel.microbatches=2",
         "model.channels_last=true", "train.early_stop_patience=1", "train.early_stop_min_delta=0.5",
         "train.early_stop_restore_best=true", "checkpoint.keep_best=val_loss", "optimizer.lr=0.01"]
finals = []
for stage in ("none", "parameters"):
    r, d = train("mixed_" + stage, 2, *FAMILIES["cnn"], *mixed, "parallel.shard=" + stage, LOOP)
    rep = json.load(open(os.path.join(d, "report.json"))) if r.rc == 0 else {}
    finals.append((r.rc, rep.get("training", {}).get("stop_reason"), rep.get("final", {}).get("test_loss"),
                   os.path.exists(os.path.join(d, "checkpoints", "best.h5"))))
c.check(f"shard=parameters with keep_best, early stopping restoring the best weights, microbatches and "
        f"channels-last ends exactly as unsharded: {finals[1]} vs {finals[0]}",
        finals[0][0] == 0 and finals[0] == finals[1] and finals[0][1] == "early_stopping" and finals[0][3], "")

# Bad settings: named, every rank exits non-zero, quickly.
r, _ = train("bad_hier", 2, *FAMILIES["cnn"], "parallel.shard=optimizer", "comm.hierarchical=on")
c.check("shard with comm.hierarchical=on: refused naming both keys",
        r.rc != 0 and "parallel.shard" in r.text and "comm.hierarchical" in r.text and r.seconds < 60, r.text[-1500:])
r, _ = train("bad_stage", 2, *FAMILIES["cnn"], "parallel.shard=everything")
c.check("an unknown shard stage: refused naming the key", r.rc != 0 and "parallel.shard" in r.text, r.text[-1500:])
r, d = train("one", 1, *FAMILIES["cnn"], "parallel.shard=gradients", "train.max_steps=5")
c.check("one replica: trains, sharding reported inactive",
        r.rc == 0 and shard_report(d)["active"] is False and shard_report(d)["stage"] == "gradients", r.text[-1500:])
c.finish()
