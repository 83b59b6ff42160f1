"""The PyTorch side of bench/shard_peer.py: the benchmark MLP (--layers hidden layers of
--width, ReLU, no dropout or batch norm) trained data-parallel over gloo, one intra-op thread
per rank, AdamW, --rows samples per rank per step, as a PyTorch user would shard it:

  --mode ddp     DistributedDataParallel + AdamW (everything replicated)
  --mode zero1   DistributedDataParallel + ZeroRedundancyOptimizer(AdamW) (optimizer state sharded)
  --mode fsdp2   fully_shard on every Linear and the model + AdamW (parameters, gradients and
                 optimizer state sharded: ZeRO stage 3)

Launched by mpiexec (one process per rank, bound like hpctrain's ranks):

    mpiexec -n 2 --bind-to core python bench/torch_zero_mlp.py --mode zero1 --data data/fashion-mnist.h5 --out r.json

Writes (rank 0) the losses, the training wall time of all steps (barrier to barrier, as
hpctrain's train_seconds), samples/s, and per rank the peak RSS and the optimizer state
bytes it holds (its local shards)."""
import argparse
import json
import os
import resource
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from _common import fashion_tensors, init_gloo


def mlp(width, layers, classes=10):
    mods, inputs = [nn.Flatten()], 28 * 28
    for _ in range(layers):
        mods += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*mods, nn.Linear(inputs, classes))


def local_bytes(t):
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("ddp", "zero1", "fsdp2"), required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rank, world = init_gloo(29541)
    torch.manual_seed(a.seed)
    model = mlp(a.width, a.layers)
    if a.mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard
        for m in model:
            if isinstance(m, nn.Linear):
                fully_shard(m)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
        state = lambda: opt.state  # noqa: E731
    else:
        model = nn.parallel.DistributedDataParallel(model)
        if a.mode == "zero1":
            from torch.distributed.optim import ZeroRedundancyOptimizer
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=a.lr,
                                          weight_decay=a.weight_decay)
            state = lambda: opt.optim.state  # noqa: E731
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
            state = lambda: opt.state  # noqa: E731
    batch = a.rows * world
    x_all, y_all, order = fashion_tensors(a.data, batch * a.steps, a.seed)
    losses = []
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(a.steps):
        idx = order[s * batch + rank * a.rows: s * batch + (rank + 1) * a.rows]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    dist.barrier()
    seconds = time.perf_counter() - t0
    opt_bytes = sum(local_bytes(v) for st in state().values() for k, v in st.items()
                    if torch.is_tensor(v) and k != "step")
    mine = torch.tensor([float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024), float(opt_bytes)],
                        dtype=torch.float64)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    if rank == 0:
        with open(a.out, "w") as f:
            json.dump({"mode": a.mode, "train_seconds": seconds, "samples_per_s": batch * a.steps / seconds,
                       "losses": losses, "peak_rss_bytes": [int(e[0]) for e in every],
                       "optimizer_state_bytes": [int(e[1]) for e in every], "torch": torch.__version__,
                       "threads": torch.get_num_threads()}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
