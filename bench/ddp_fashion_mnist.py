"""The PyTorch side of the peer benchmark: the recipe of an hpctrain config, trained the
way a PyTorch user would write it: a Dataset over the Fashion-MNIST idx files,
DistributedSampler, DataLoader, DistributedDataParallel over gloo, launched by torchrun.

    torchrun --nproc_per_node 2 bench/ddp_fashion_mnist.py --config RUN_DIR/config.json --out result.json

It reads the resolved config hpctrain wrote (model, optimizer, schedule, batch, epochs,
seed, augmentation) so both sides run the same recipe; see bench/peer_ddp.py."""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FashionMNIST(Dataset):
    def __init__(self, root, split, mean, std, flip=False, crop_padding=0):
        prefix = "train" if split == "train" else "t10k"
        self.images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
        self.labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
        self.mean, self.std, self.flip, self.pad = mean, std, flip, crop_padding

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i].astype(np.float32)).unsqueeze(0)
        x = (x - self.mean) / self.std
        if self.pad > 0:
            x = F.pad(x, (self.pad,) * 4, value=(0.0 - self.mean) / self.std)
            dy, dx = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = x[:, dy:dy + 28, dx:dx + 28]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])


class CNN(nn.Module):
    """hpctrain's `cnn`: 3x3 conv stages (batch norm, ReLU, 2x2 max pool), FC, dropout, classifier."""

    def __init__(self, channels, fc_width, dropout, batch_norm, num_classes=10):
        super().__init__()
        layers, c, side = [], 1, 28
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers += [nn.BatchNorm2d(out)]
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            c, side = out, side // 2
        self.features = nn.Sequential(*layers)
        head = [nn.Linear(c * side * side, fc_width), nn.ReLU()]
        if dropout > 0:
            head += [nn.Dropout(dropout)]
        head += [nn.Linear(fc_width, num_classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def lr_factor(s, total, per_epoch, sched):
    """hpctrain's LrSchedule (src/train/Schedule.cpp), as a multiplier of the peak rate."""
    name = sched["name"]
    if name == "onecycle":
        initial = 1.0 / sched["onecycle_div_factor"]
        final = initial / sched["onecycle_final_div_factor"]
        up = max(1.0, sched["onecycle_pct_start"] * total - 1.0)
        cos = lambda a, b, t: b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))
        if s <= up:
            return cos(initial, 1.0, s / up)
        return cos(1.0, final, min(1.0, (s - up) / max(1.0, total - 1 - up)))
    w = sched["warmup_steps"]
    if s < w:
        return sched["warmup_start_factor"] + (1 - sched["warmup_start_factor"]) * (s + 1) / w
    if name == "step":
        return sched["step_gamma"] ** ((s // per_epoch) // sched["step_epochs"])
    if name == "cosine":
        t = min(1.0, (s - w) / max(1, total - w))
        lo = sched["min_lr_factor"]
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="resolved hpctrain config (RUN_DIR/config.json)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per rank")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = json.load(open(args.config))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    tc, mc, oc = cfg["train"], cfg["model"], cfg["optimizer"]
    torch.manual_seed(tc["seed"])

    raw = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz")).astype(np.float64)
    mean, std = float(raw.mean()), float(raw.std())
    train = FashionMNIST(args.data, "train", mean, std, cfg["data"]["augment_flip"], cfg["data"]["augment_crop_padding"])
    test = FashionMNIST(args.data, "test", mean, std)
    per_rank = tc["batch_size"] // world
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=tc["seed"], drop_last=True)
    loader = DataLoader(train, batch_size=per_rank, sampler=sampler, num_workers=args.workers, drop_last=True,
                        persistent_workers=args.workers > 0)
    test_loader = DataLoader(test, batch_size=tc["eval_batch_size"],
                             sampler=DistributedSampler(test, num_replicas=world, rank=rank, shuffle=False))

    model = DDP(CNN(mc["channels"], mc["fc_width"], mc["dropout"], mc["batch_norm"]))
    params = model.parameters()
    if oc["name"] == "sgd":
        opt = torch.optim.SGD(params, oc["lr"], momentum=oc["momentum"], nesterov=oc["nesterov"],
                              weight_decay=oc["weight_decay"])
    elif oc["name"] == "adam":
        opt = torch.optim.Adam(params, oc["lr"], betas=(oc["beta1"], oc["beta2"]), eps=oc["eps"],
                               weight_decay=oc["weight_decay"])
    else:
        opt = torch.optim.AdamW(params, oc["lr"], betas=(oc["beta1"], oc["beta2"]), eps=oc["eps"],
                                weight_decay=oc["weight_decay"])
    per_epoch = len(loader)
    total = per_epoch * tc["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, per_epoch, cfg["schedule"]))

    epochs, train_seconds = [], 0.0
    for epoch in range(tc["epochs"]):
        sampler.set_epoch(epoch)
        model.train()
        dist.barrier()
        t0 = time.perf_counter()
        seen = 0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        dist.barrier()
        dt = time.perf_counter() - t0
        train_seconds += dt
        model.eval()
        correct = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for x, y in test_loader:
                correct[0] += (model(x).argmax(1) == y).sum()
                correct[1] += len(y)
        dist.all_reduce(correct)
        rec = {"epoch": epoch, "seconds": dt, "samples_per_s": seen * world / dt,
               "test_accuracy": float(correct[0] / correct[1]), "train_seconds_total": train_seconds}
        epochs.append(rec)
        if rank == 0:
            print(json.dumps(rec), flush=True)
    if rank == 0:
        json.dump({"world": world, "threads": args.threads, "workers": args.workers, "epochs": epochs,
                   "samples_per_s": sum(e["samples_per_s"] * e["seconds"] for e in epochs) / train_seconds,
                   "final_test_accuracy": epochs[-1]["test_accuracy"], "torch": torch.__version__},
                  open(args.out, "w"), indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
