"""The PyTorch side of bench/pipeline_peer.py: hpctrain's pipeline benchmark MLP (4 hidden
layers of --width, ReLU, no dropout or batch norm) split into the same 2 stages (stem and
blocks 0-1 | blocks 2-3 and head), trained with torch.distributed.pipelining's Schedule1F1B
over gloo, --microbatches microbatches of --rows samples, AdamW, one intra-op thread per rank.
Launched by mpiexec (one process per stage, bound like hpctrain's ranks):

    mpiexec -n 2 --bind-to core python bench/torch_pipelining_mlp.py --data data/fashion-mnist.h5 --out r.json

Writes (last stage) the loss of every step, the training wall time of all steps (from a
barrier before the first to a barrier after the last, as hpctrain's train_seconds) and samples/s."""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.pipelining import PipelineStage, Schedule1F1B

from _common import fashion_tensors, init_gloo


def stages(width, classes=10):
    first = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    last = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, classes))
    return first, last


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rank, world = init_gloo(29533)
    torch.manual_seed(a.seed)
    module = stages(a.width)[rank]  # both build both from the seed; each keeps its own
    batch = a.rows * a.microbatches
    x_all, y_all, order = fashion_tensors(a.data, batch * a.steps, a.seed)
    stage = PipelineStage(module, rank, world, torch.device("cpu"))
    schedule = Schedule1F1B(stage, n_microbatches=a.microbatches, loss_fn=lambda out, y: F.cross_entropy(out, y))
    opt = torch.optim.AdamW(module.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    losses = []
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(a.steps):
        idx = order[s * batch:(s + 1) * batch]
        opt.zero_grad(set_to_none=False)
        if rank == 0:
            schedule.step(x_all[idx])
        else:
            mb_losses = []
            schedule.step(target=y_all[idx], losses=mb_losses)
            losses.append(float(torch.stack(mb_losses).detach().mean()))
        opt.step()
    dist.barrier()
    seconds = time.perf_counter() - t0
    if rank == world - 1:
        with open(a.out, "w") as f:
            json.dump({"train_seconds": seconds, "samples_per_s": batch * a.steps / seconds, "losses": losses,
                       "torch": torch.__version__, "threads": torch.get_num_threads()}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
