"""One rank of tests/test_torch_ddp.py: trains the same small model with torch.nn.LSTM and with
fastrnn.torch.LSTM under DistributedDataParallel (gloo, a file store: no network) and saves every
parameter's gradient after each step.  Usage: python ddp_worker.py RANK WORLD STORE_FILE OUT.npz BACKEND"""
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fastrnn.torch

T, B, I, H, STEPS = 6, 3, 4, 5, 3


class Tagger(torch.nn.Module):
    """2-layer bidirectional LSTM and a linear read-out of every step."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
        self.out = torch.nn.Linear(2 * H, 2, dtype=torch.float64)

    def forward(self, x):
        return self.out(self.lstm(x)[0])


def main(rank, world, store, out_path, backend):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    results = {}
    for impl in ("torch", "fastrnn"):
        torch.manual_seed(0)                    # the same initial weights on every rank and for both models
        model = Tagger()
        if impl == "fastrnn":
            fastrnn.torch.convert(model, backend=backend)
            assert type(model.lstm) is fastrnn.torch.LSTM
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(100 + rank)        # each rank its own batches
        for step in range(STEPS):
            x = torch.randn(T, B, I, generator=data, dtype=torch.float64)
            target = torch.randn(T, B, 2, generator=data, dtype=torch.float64)
            optimizer.zero_grad()
            loss = (ddp(x) - target).pow(2).mean()
            loss.backward()                     # DDP averages the gradients over the ranks here
            for name, p in model.named_parameters():
                results[f"{impl}/{step}/{name}"] = p.grad.detach().numpy().copy()
            optimizer.step()
    np.savez(out_path, **results)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
