#!/usr/bin/python3
"""gradient_rate.py - gradient rows/s over HTTP: 1024 x 64 gradient steps
posted by 2 client processes to a 200k x 64 table, binary bodies against
JSON bodies, in one run.

Each client prepares its request bodies once (JSON text as json.dumps of
.tolist() would give; binary as int64 ids + float32 rows) and keeps WINDOW
requests in flight on its keep-alive connection (pipelining; the server
answers them in order), so the figures are the server's and the network's,
not the client's encoding. Every answer is checked (200, a version). Prints
rows/s per form and optimizer, the server's CPU time per request (which
the other work on a shared machine disturbs much less) and the binary/JSON
ratio. Target (issue):
>= 5M rows/s with binary bodies (JSON was ~70k rows/s).

  bench/gradient_rate.py [BUILD_DIR]     SECONDS=3 WINDOW=4 CLIENTS=2
"""

import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

from benchserver import BenchServer
from embedding_server._http import Connection

ROWS, DIM, BATCH = 200000, 64, 1024
SECONDS = float(os.environ.get("SECONDS", 3))
WINDOW = int(os.environ.get("WINDOW", 4))
CLIENTS = int(os.environ.get("CLIENTS", 2))
BODIES = 8  # distinct requests per client, cycled


def bodies(seed, form):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(BODIES):
        ids = rng.integers(0, ROWS, BATCH).astype("<i8")
        grads = (rng.standard_normal((BATCH, DIM)) * 1e-3).astype("<f4")
        if form == "binary":
            out.append(([("Content-Type", "application/octet-stream"),
                         ("X-Embedding-Shape", f"{BATCH},{DIM}")], [ids.tobytes() + grads.tobytes()]))
        else:
            text = json.dumps({"ids": ids.tolist(), "grads": grads.tolist()}).encode()
            out.append(([("Content-Type", "application/json")], [text]))
    return out


def client(url, table, form, seed, start, seconds, results):
    reqs = bodies(seed, form)
    conn = Connection(url, timeout=120)
    conn.ready(True)
    path = f"/v1/tables/{table}/gradients"
    while time.time() < start:
        time.sleep(0.001)
    sent = done = 0
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        while sent - done < WINDOW and elapsed < seconds:
            headers, parts = reqs[sent % BODIES]
            conn.send("POST", path, headers, parts)
            sent += 1
        if done == sent:
            break
        resp = conn.read()
        if resp.status != 200 or b'"version"' not in resp.body:
            results.put(("error", resp.status, bytes(resp.body[:200])))
            return
        done += 1
    results.put(("ok", done, time.perf_counter() - t0))
    conn.close()


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url, table, form, seconds):
    results = mp.Queue()
    start = time.time() + 0.5
    procs = [mp.Process(target=client, args=(url, table, form, 100 + i, start, seconds, results))
             for i in range(CLIENTS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    errors = [g for g in got if g[0] != "ok"]
    if errors:
        sys.exit(f"gradient_rate: {form} {table}: error answer {errors[0]}")
    requests = sum(g[1] for g in got)
    wall = max(g[2] for g in got)
    return requests * BATCH / wall, requests


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else None
    print(f"# {BATCH} x {DIM} gradient steps, {CLIENTS} clients, {WINDOW} in flight each, "
          f"{SECONDS:g} s per figure; {ROWS} x {DIM} table; server durability "
          f"{os.environ.get('DURABILITY') or 'sync (default)'}", flush=True)
    figures = {}
    for opt in ({"name": "sgd", "lr": 0.01}, {"name": "sparse_adam", "lr": 1e-3}):
        server = BenchServer({"name": "t", "init": {"num_embeddings": ROWS, "embedding_dim": DIM,
                                                    "seed": 1}, "optimizer": opt}, build)
        try:
            for form in ("binary", "json"):
                seconds = SECONDS if form == "binary" else max(SECONDS, 5)
                cpu0 = cpu_seconds(server.proc.pid)
                rate, requests = measure(server.url, "t", form, seconds)
                cpu = cpu_seconds(server.proc.pid) - cpu0
                figures[(opt["name"], form)] = rate
                # the server's CPU per request does not depend on what else
                # the shared machine runs, unlike rows/s
                print(f"{opt['name']:12s} {form:7s} {rate:12.0f} rows/s   server CPU "
                      f"{cpu / requests * 1e6:8.0f} us/request, "
                      f"{requests * BATCH / cpu / 1e6:6.2f}M rows per CPU-second", flush=True)
        finally:
            server.stop()
    for name in ("sgd", "sparse_adam"):
        b, j = figures[(name, "binary")], figures[(name, "json")]
        print(f"# {name}: binary / JSON = {b / j:.1f}x; binary {b / 1e6:.2f}M rows/s "
              f"(target 5M)")


if __name__ == "__main__":
    main()
