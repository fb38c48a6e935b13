#!/usr/bin/python3
"""train_loop.py - the training loop of the issue, in one run: 1024 random ids
of a 200k x 64 table, SparseAdam, a small loss, backward, step;

  in-process   nn.Embedding(sparse=True) + torch.optim.SparseAdam (the peer)
  service      RemoteEmbedding through the Python client, binary bodies, as it
               comes (pipeline=True: a step's answer is read before the next lookup's)
  sequential   the same with pipeline=False (each step waits for its answer)
  service-json the same with JSON bodies (what the loop cost before binary bodies)

The four loops take turns, ROUNDS rounds of SECONDS each, so that the load of
a shared machine falls on all of them alike; prints the median and best
steps/s of each and the ratios of the medians to in-process. Target (issue): service >= 1.0x in-process.

  bench/train_loop.py [BUILD_DIR]      SECONDS=3 ROUNDS=3 ROWS=200000 DIM=64 BATCH=1024
"""

import os
import sys
import time

import torch

from benchserver import BenchServer
from embedding_server import Client, RemoteEmbedding, RemoteOptimizer

ROWS = int(os.environ.get("ROWS", 200000))
DIM = int(os.environ.get("DIM", 64))
BATCH = int(os.environ.get("BATCH", 1024))
SECONDS = float(os.environ.get("SECONDS", 3))
ROUNDS = int(os.environ.get("ROUNDS", 3))
LR = 1e-3


def loop(emb, opt, gen, seconds, max_steps=None):
    target = torch.randn(BATCH, generator=gen)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and (max_steps is None or steps < max_steps):
        ids = torch.randint(0, ROWS, (BATCH,), generator=gen)
        out = emb(ids)
        loss = (out.sum(dim=1) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    if hasattr(opt, "sync"):
        opt.sync()
    return steps / (time.perf_counter() - start)


def warm(setup, steps=20):
    emb, opt, gen = setup
    loop(emb, opt, gen, 10.0, max_steps=steps)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else None
    torch.set_num_threads(1)
    server = BenchServer({"name": "t", "init": {"num_embeddings": ROWS, "embedding_dim": DIM,
                                                "seed": 1},
                          "optimizer": {"name": "sparse_adam", "lr": LR}}, build)
    try:
        client = Client(server.url)

        def in_process():
            emb = torch.nn.Embedding(ROWS, DIM, sparse=True)
            return emb, torch.optim.SparseAdam(emb.parameters(), lr=LR)

        def remote(**kw):
            def make():
                emb = RemoteEmbedding(client, "t", **kw)
                return emb, RemoteOptimizer(emb)
            return make

        print(f"# {BATCH} random ids of a {ROWS} x {DIM} table, SparseAdam lr {LR}; "
              f"torch {torch.__version__}, 1 thread; {ROUNDS} rounds of {SECONDS:g} s, "
              f"interleaved; server durability {os.environ.get('DURABILITY') or 'sync (default)'}", flush=True)
        modes = {"in-process": in_process, "service": remote(),
                 "sequential": remote(pipeline=False), "service-json": remote(binary=False)}
        setups = {}
        for name, make in modes.items():
            emb, opt = make()
            setups[name] = (emb, opt, torch.Generator().manual_seed(1))
            warm(setups[name])
        rates = {name: [] for name in modes}
        for _ in range(ROUNDS):
            for name, (emb, opt, gen) in setups.items():
                seconds = SECONDS if name != "service-json" else min(SECONDS, 1.0)
                rates[name].append(loop(emb, opt, gen, seconds))
        med = {name: sorted(r)[len(r) // 2] for name, r in rates.items()}
        for name, r in rates.items():
            print(f"{name:13s} median {med[name]:7.0f} steps/s, best {max(r):7.0f}  "
                  f"(rounds: {' '.join(f'{x:.0f}' for x in r)})", flush=True)
        print("# ratios to in-process (median of the rounds):")
        for name in ("service", "sequential", "service-json"):
            print(f"{name:13s} {med[name] / med['in-process']:6.2f}x")
        client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
