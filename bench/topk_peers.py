#!/usr/bin/python3
"""Peers for bench/topk.c: numpy brute force and FAISS IndexFlatIP, exact
top-10 by inner product on the table and queries topk.c wrote.

    topk_peers.py TABLE.f32 QUERIES.f32 ROWS DIM BATCH

Prints "time <peer> <nq> <median ms>" and "ids <peer> <top-10 of query 0>"
lines for topk.c to read (Debian's python3-numpy and python3-faiss).
"""
import statistics
import sys
import time

import numpy as np

K = 10


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def numpy_topk(x, q):
    """Brute force: all scores with one matrix product, then a partial sort."""
    scores = q @ x.T
    part = np.argpartition(-scores, K, axis=1)[:, :K]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def main():
    table, queries, rows, dim, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    x = np.fromfile(table, dtype="<f4").reshape(rows, dim)
    q = np.fromfile(queries, dtype="<f4").reshape(batch, dim)

    ids = numpy_topk(x, q[:1])
    print("ids numpy", *ids[0], flush=True)
    print("time numpy 1 %.3f" % median_ms(lambda: numpy_topk(x, q[:1]), 5), flush=True)
    print("time numpy %d %.3f" % (batch, median_ms(lambda: numpy_topk(x, q), 3)), flush=True)

    try:
        import faiss
    except ImportError:
        print("faiss not installed (Debian: python3-faiss); skipped", flush=True)
        return
    index = faiss.IndexFlatIP(dim)
    index.add(x)
    _, fids = index.search(q[:1], K)
    print("ids faiss", *fids[0], flush=True)
    print("faiss %s, %d OpenMP threads" % (faiss.__version__, faiss.omp_get_max_threads()),
          flush=True)
    print("time faiss 1 %.3f" % median_ms(lambda: index.search(q[:1], K), 7), flush=True)
    print("time faiss %d %.3f" % (batch, median_ms(lambda: index.search(q, K), 3)), flush=True)


if __name__ == "__main__":
    main()
