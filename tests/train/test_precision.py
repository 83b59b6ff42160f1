"""Mixed precision and the device choice, on CPUs: bf16 autocast trains to fp32's accuracy;
fp16 with dynamic loss scaling skips the steps whose gradients overflow, backs the scale
off and grows it again, and trains; its scaler state survives a checkpoint (a run resumed
halfway ends bitwise where an uninterrupted one does), also with the fused optimizer deciding
on the device; precision.params=low (low-precision weights with fp32 masters) trains and
resumes bitwise; device.cuda_graphs on a CPU is a notice; device.type=auto falls back to the
CPU with a notice and device.type=cuda without a GPU is an error."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
CONFIG = os.path.join(SOURCE, "configs", "fashion_mnist_fast.json")
work = tempfile.mkdtemp(prefix="hpctrain_precision_")
small = ["data.path=" + FASHION, "data.verify_hashes=false", "run.progress=none"]


def train(name, *extra, np=2, timeout=600):
    run_dir = os.path.join(work, name)
    r = mpirun(np, ["train", CONFIG, *small, "run.dir=" + run_dir, *extra], timeout=timeout)
    report = json.load(open(os.path.join(run_dir, "report.json"))) if r.rc == 0 else {}
    return r, report


base = ["data.limit_train=6000", "train.epochs=1"]
r32, fp32 = train("fp32", *base)
c.check("fp32 trains; device.type=auto on a machine without a GPU says so and uses the CPU",
        r32.rc == 0
        and ("no GPU visible, training on the CPU" in r32.out
             or "this build has no CUDA support, training on the CPU" in r32.out)
        and fp32.get("world", {}).get("device") == "cpu", r32.text[-2000:])
rbf, bf16 = train("bf16", *base, "precision.mode=bf16")
acc32 = fp32.get("final", {}).get("test_accuracy", 0)
accbf = bf16.get("final", {}).get("test_accuracy", 0)
c.check(f"bf16 autocast reaches fp32's test accuracy within 0.02 ({accbf:.4f} vs {acc32:.4f})",
        rbf.rc == 0 and abs(accbf - acc32) < 0.02 and bf16["precision"]["mode"] == "bf16"
        and not bf16["precision"]["loss_scaling"], rbf.text[-2000:])

# fp16 with a scale far too large: the first steps overflow and are skipped while the
# scale halves, then training goes on and the scale grows every 4 clean steps.
scaled = ["data.limit_train=3000", "train.epochs=1", "train.batch_size=64", "precision.mode=fp16",
          "precision.init_scale=1e9", "precision.growth_interval=4"]
r16, fp16 = train("fp16", *scaled)
p = fp16.get("precision", {})
c.check("fp16: overflowing steps are skipped and the scale backs off, then grows again",
        r16.rc == 0 and p.get("loss_scaling") and 3 <= p.get("skipped_steps", 0) < 46
        and 0 < p.get("final_loss_scale", 0) < 1e9, json.dumps(p) + r16.text[-2000:])
c.check("fp16 trains (test accuracy > 0.6)", fp16.get("final", {}).get("test_accuracy", 0) > 0.6,
        str(fp16.get("final")))

# The scaler's state in checkpoints: 2 epochs of 20 steps straight, or 1 epoch, stop,
# and resume for the second.
ckpt = scaled + ["data.limit_train=1280", "checkpoint.at_end=true", "train.test_every_epoch=false",
                 "schedule.name=constant"]  # one schedule for 1 or 2 epochs
ra, whole = train("fp16_whole", *ckpt, "train.epochs=2")
rb, _ = train("fp16_split", *ckpt, "train.epochs=1")
rc, resumed = train("fp16_split", *ckpt, "train.epochs=2", "checkpoint.resume=auto")
c.check("fp16 resumed from a checkpoint ends bitwise where the uninterrupted run does (scale, skips, loss)",
        ra.rc == 0 and rb.rc == 0 and rc.rc == 0 and "resuming from" in rc.out
        and resumed["precision"] == whole["precision"]
        and resumed["final"]["test_loss"] == whole["final"]["test_loss"],
        json.dumps({"whole": whole.get("precision"), "resumed": resumed.get("precision"),
                    "loss": [whole.get("final", {}).get("test_loss"), resumed.get("final", {}).get("test_loss")]})
        + rc.text[-1500:])

# The same with the fused optimizer: unscaling, the skip decision, clipping and the scale's
# update run as tensor operations, never read on the host (what GPUs and device.cuda_graphs
# run). The scaler's state and the optimizer's step counts, kept on the device, still
# checkpoint exactly: a count that included the skipped steps would change the resumed run.
fused = ["optimizer.fused=on", "train.grad_clip_norm=1.0"]
rf, f16 = train("fp16_fused", *scaled, *fused)
pf = f16.get("precision", {})
c.check("fp16 with the fused optimizer (decided on the device): overflowing steps skipped, the scale backs off "
        "and grows again, and it trains",
        rf.rc == 0 and 3 <= pf.get("skipped_steps", 0) < 46 and 0 < pf.get("final_loss_scale", 0) < 1e9
        and f16.get("final", {}).get("test_accuracy", 0) > 0.6, json.dumps(pf) + rf.text[-2000:])
rfa, fwhole = train("fp16_fused_whole", *ckpt, *fused, "train.epochs=2")
rfb, _ = train("fp16_fused_split", *ckpt, *fused, "train.epochs=1")
rfc, fresumed = train("fp16_fused_split", *ckpt, *fused, "train.epochs=2", "checkpoint.resume=auto")
c.check("fp16 with the fused optimizer resumed from a checkpoint ends bitwise where the uninterrupted run does",
        rfa.rc == 0 and rfb.rc == 0 and rfc.rc == 0 and "resuming from" in rfc.out
        and fwhole["precision"]["skipped_steps"] > 0 and fresumed["precision"] == fwhole["precision"]
        and fresumed["final"]["test_loss"] == fwhole["final"]["test_loss"],
        json.dumps({"whole": fwhole.get("precision"), "resumed": fresumed.get("precision"),
                    "loss": [fwhole.get("final", {}).get("test_loss"), fresumed.get("final", {}).get("test_loss")]})
        + rfc.text[-1500:])

# precision.params=low: the GEMM weights in the low type, fp32 masters reduced and stepped. The
# weights round as autocast's casts of fp32 weights do, and the gradients arrive in fp32 as
# autocast's cast back delivers them: the same arithmetic, so the same bits as
# precision.params=fp32. bf16 with the host-side step (optimizer.fused=off); fp16 with the fused
# optimizer skipping overflowing steps on the device, and its checkpoints (the masters) resuming
# bitwise.
rbo, bf16_off = train("bf16_host_step", *base, "precision.mode=bf16", "optimizer.fused=off")
rlo, low = train("bf16_low", *base, "precision.mode=bf16", "precision.params=low", "optimizer.fused=off")
losses = [[e.get("train_loss") for e in rep.get("epochs", [])] + [rep.get("final", {}).get("test_loss")]
          for rep in (bf16_off, low)]
c.check("bf16 weights with fp32 masters: bitwise the losses of autocast's fp32 weights, and more parameter bytes "
        "held (masters and weights)",
        rbo.rc == 0 and rlo.rc == 0 and low["precision"]["params"] == "low" and losses[0] == losses[1]
        and None not in losses[0]
        and low["parallel"]["shard"]["parameter_bytes"][0] > fp32["parallel"]["shard"]["parameter_bytes"][0],
        json.dumps(losses) + rlo.text[-2000:])
lows = [*ckpt, *fused, "precision.params=low"]
rla, lwhole = train("fp16_low_whole", *lows, "train.epochs=2")
rlb, _ = train("fp16_low_split", *lows, "train.epochs=1")
rlc, lresumed = train("fp16_low_split", *lows, "train.epochs=2", "checkpoint.resume=auto")
c.check("fp16 weights with fp32 masters and the fused optimizer: the steps, skips and loss of fp32 weights, and a "
        "resume ends bitwise where the uninterrupted run does",
        rla.rc == 0 and rlb.rc == 0 and rlc.rc == 0 and "resuming from" in rlc.out
        and lwhole["precision"]["skipped_steps"] == fwhole["precision"]["skipped_steps"] > 0
        and lresumed["precision"] == lwhole["precision"]
        and lresumed["final"]["test_loss"] == lwhole["final"]["test_loss"] == fwhole["final"]["test_loss"],
        json.dumps({"whole": lwhole.get("final"), "resumed": lresumed.get("final"),
                    "fp32 weights": fwhole.get("final")}) + rlc.text[-1500:])
# With the data-parallel sharding of stages 1 and 2 (the masters are what the buckets shard and
# the chunks step) and with pipeline stages: still bitwise the runs with fp32 weights, and a
# sharded checkpoint (written in parallel, and serially) resumes bitwise.
layouts = {"shard_gradients": ["parallel.shard=gradients", "comm.bucket_mb=0.05"],
           "pipeline": ["parallel.pipeline_stages=2", "parallel.microbatches=2"]}
quick = ["data.limit_train=1280", "train.batch_size=64", "train.epochs=2", "precision.mode=bf16",
         "checkpoint.at_end=true", "train.test_every_epoch=false", "schedule.name=constant"]
lowruns = {}
for name, extra in layouts.items():
    ra, a = train(name + "_fp32", *quick, *extra)
    rb, b = lowruns[name] = train(name + "_low", *quick, *extra, "precision.params=low")
    losses = [[e.get("train_loss") for e in rep.get("epochs", [])] + [rep.get("final", {}).get("test_loss")]
              for rep in (a, b)]
    c.check(f"{name}: bf16 weights with fp32 masters give bitwise the losses of fp32 weights",
            ra.rc == 0 and rb.rc == 0 and losses[0] == losses[1] and None not in losses[0],
            json.dumps(losses) + ra.text[-1000:] + rb.text[-1500:])
sharded_loss = lowruns["shard_gradients"][1].get("final", {}).get("test_loss")
for write in ("true", "false"):
    sharded = [*quick, *layouts["shard_gradients"], "precision.params=low", "checkpoint.parallel_write=" + write]
    rb, _ = train("shard_low_split_" + write, *sharded, "train.epochs=1")
    rc, resumed = train("shard_low_split_" + write, *sharded, "checkpoint.resume=auto")
    c.check(f"sharded, bf16 weights with fp32 masters: a checkpoint (parallel_write={write}) resumes bitwise",
            rb.rc == 0 and rc.rc == 0 and "resuming from" in rc.out
            and resumed.get("final", {}).get("test_loss") == sharded_loss,
            json.dumps([resumed.get("final", {}).get("test_loss")]) + rc.text[-1500:])
r = mpirun(1, ["train", CONFIG, *small, "precision.params=low"], timeout=60)
c.check("precision.params=low with precision.mode=fp32: a config error naming both keys",
        r.rc == 2 and "precision.params=low" in r.err and "precision.mode" in r.err, r.err[-800:])
r = mpirun(1, ["train", CONFIG, *small, "precision.mode=bf16", "precision.params=low", "parallel.shard=parameters"],
           timeout=60)
c.check("precision.params=low with parallel.shard=parameters: a config error naming both",
        r.rc == 2 and "parallel.shard=parameters" in r.err and "precision.params" in r.err, r.err[-800:])

rg, graphs = train("graphs_on_cpu", "data.limit_train=1280", "train.epochs=1", "device.cuda_graphs=true", np=1)
c.check("device.cuda_graphs on the CPU: a notice, then an ordinary run",
        rg.rc == 0 and "device.cuda_graphs: ignored" in rg.out and graphs["training"]["cuda_graphs"] is False,
        rg.text[-1500:])

r = mpirun(2, ["train", CONFIG, *small, "run.dir=" + os.path.join(work, "cuda"), "device.type=cuda"], timeout=120)
c.check("device.type=cuda without a GPU: one message, non-zero exit",
        r.rc != 0 and r.err.count("device.type=cuda:") == 1, r.err[-1500:])
r = mpirun(1, ["train", CONFIG, *small, "precision.mode=fp8"], timeout=60)
c.check("an unknown precision is a config error", r.rc == 2 and "precision.mode" in r.err, r.err[-800:])
c.finish()
