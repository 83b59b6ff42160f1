"""Peer benchmark: the same recipe trained by hpctrain (mpirun) and by an idiomatic
PyTorch DistributedDataParallel script (torchrun, gloo), from the same torch wheel, on the
same machine, alternating runs. Prints one table and writes OUT/results.json.

    .venv/bin/python bench/peer_ddp.py --config configs/fashion_mnist_cnn.json --epochs 2 --repeats 3

Same model, data (the full 60000-sample training split: data.val_fraction=0), global and
per-rank batch, optimizer, learning-rate schedule, augmentation and threads per rank.
Figures: samples/s over the training loops (evaluation excluded), their ratio, exposed
communication share of a step (hpctrain's report; DDP does not expose it), final test
accuracy, and the training time until the test accuracy after an epoch first reaches the
target."""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, env=None):
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.monotonic() - t0


def time_to(epochs, target):
    for e in epochs:
        if e.get("test_accuracy", 0) >= target:
            return e["train_seconds_total"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/fashion_mnist_cnn.json")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank, both sides")
    ap.add_argument("--workers", type=int, default=0, help="PyTorch DataLoader workers per rank")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.93, help="test accuracy for time-to-accuracy")
    ap.add_argument("--out", default="runs/peer_ddp")
    ap.add_argument("overrides", nargs="*", help="extra hpctrain key=value overrides (both sides)")
    args = ap.parse_args()

    os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    py = os.path.join(ROOT, ".venv", "bin", "python")
    data = os.path.join(ROOT, "data", "fashion-mnist.h5")
    if not os.path.exists(data):
        sh([os.path.join(ROOT, "build", "hpctrain"), "import", "fashion-mnist", "--output", data])
    common = ["data.path=" + data, "data.val_fraction=0", "train.test_every_epoch=true", "run.progress=none",
              f"run.threads={args.threads}"] + ([f"train.epochs={args.epochs}"] if args.epochs else []) + args.overrides
    results = {"hpctrain": [], "pytorch": []}
    commands = {}
    for rep in range(args.repeats):
        run_dir = os.path.join(args.out, f"hpctrain-{rep}")
        cmd = ["mpirun", "-np", str(args.ranks), os.path.join("build", "hpctrain"), "train", args.config,
               "run.dir=" + run_dir] + common
        commands["hpctrain"] = " ".join(cmd)
        wall = sh(cmd, env)
        rep_h = json.load(open(os.path.join(ROOT, run_dir, "report.json")))
        results["hpctrain"].append({"samples_per_s": rep_h["training"]["samples_per_s"],
                                    "exposed_comm_share": rep_h["communication"]["exposed_share_of_step"],
                                    "final_test_accuracy": rep_h["epochs"][-1]["test_accuracy"],
                                    "time_to_target": time_to(rep_h["epochs"], args.target), "wall_s": wall})
        out = os.path.join(args.out, f"pytorch-{rep}.json")
        cmd = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ranks),
               os.path.join("bench", "ddp_fashion_mnist.py"), "--config", os.path.join(run_dir, "config.json"),
               "--threads", str(args.threads), "--workers", str(args.workers), "--out", out]
        commands["pytorch"] = " ".join(cmd)
        wall = sh(cmd, env)
        rep_p = json.load(open(os.path.join(ROOT, out)))
        results["pytorch"].append({"samples_per_s": rep_p["samples_per_s"], "exposed_comm_share": None,
                                   "final_test_accuracy": rep_p["final_test_accuracy"],
                                   "time_to_target": time_to(rep_p["epochs"], args.target), "wall_s": wall})

    def med(side, key):
        vals = [r[key] for r in results[side] if r[key] is not None]
        return statistics.median(vals) if vals else None

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"\nmachine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}); {args.ranks} ranks x {args.threads} "
          f"thread(s); {args.repeats} repeat(s), medians; PyTorch DataLoader workers per rank: {args.workers}")
    fmt = lambda v, f: "-" if v is None else f.format(v)
    print(f"{'':10} {'samples/s':>10} {'exposed comm':>13} {'test acc':>9} {'time to ' + str(args.target):>14}")
    for side in ("hpctrain", "pytorch"):
        print(f"{side:10} {fmt(med(side, 'samples_per_s'), '{:10.0f}')} "
              f"{fmt(med(side, 'exposed_comm_share'), '{:12.1%}'):>13} {fmt(med(side, 'final_test_accuracy'), '{:9.4f}')} "
              f"{fmt(med(side, 'time_to_target'), '{:13.1f}s'):>14}")
    ratio = med("hpctrain", "samples_per_s") / med("pytorch", "samples_per_s")
    tt_h, tt_p = med("hpctrain", "time_to_target"), med("pytorch", "time_to_target")
    print(f"samples/s ratio hpctrain/pytorch: {ratio:.3f}")
    if tt_h and tt_p:
        print(f"time-to-target ratio hpctrain/pytorch: {tt_h / tt_p:.3f}")
    json.dump({"machine": {"host": platform.node(), "cpus": os.cpu_count(), "cpu": cpu}, "args": vars(args),
               "commands": commands, "runs": results, "samples_per_s_ratio": ratio},
              open(os.path.join(ROOT, args.out, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
