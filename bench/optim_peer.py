#!/usr/bin/python3
"""The peer of bench/optim.c: the same sparse optimizer step done by PyTorch on
CPU, reported in rows/s.

For each optimizer the weight is an N x D float32 Parameter; one step hands the
optimizer the gradient nn.Embedding(sparse=True)'s backward would leave (a
sparse COO tensor of the batch's ids and gradient rows) and calls step(). The
forward pass and autograd are left out, which favours torch: the service's
figure includes building the gradient from the ids.

Usage: optim_peer.py rows dim batch batches repeats
Prints one line per optimizer: "<name> <rows/s wall> <rows/s cpu>", each the
best of repeats; cpu is the process's CPU time (all its threads), which the
shared benchmark machine disturbs less than wall time.
"""
import sys
import time

import torch

OPTIMIZERS = [
    ("sgd", lambda p: torch.optim.SGD([p], lr=0.01)),
    ("sparse_adam", lambda p: torch.optim.SparseAdam([p], lr=1e-3)),
    ("adagrad", lambda p: torch.optim.Adagrad([p], lr=1e-2)),
]


def main():
    rows, dim, batch, batches, repeats = (int(x) for x in sys.argv[1:6])
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, rows, (batches, batch), generator=gen)
    grads = torch.randn(batches, batch, dim, generator=gen)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for name, make in OPTIMIZERS:
        weight = torch.nn.Parameter(torch.randn(rows, dim, generator=gen))
        opt = make(weight)

        def step(b):
            weight.grad = torch.sparse_coo_tensor(ids[b].unsqueeze(0), grads[b], (rows, dim))
            opt.step()

        for b in range(min(5, batches)):
            step(b)
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            for b in range(batches):
                step(b)
            best_wall = min(best_wall, time.perf_counter() - w0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        rows_done = batches * batch
        print(f"{name} {rows_done / best_wall:.0f} {rows_done / best_cpu:.0f}", flush=True)
        del opt, weight


if __name__ == "__main__":
    main()
