#!/usr/bin/python3
"""Generates tests/fixtures/similarity/: expected pair scores from real
PyTorch, most_similar top-10 from real gensim, and brute-force top-k from
numpy, for tests/test_similarity.c and tests/test_topk.c.

Every file is raw little-endian: .f32 float32 values, .i64 int64 values; the
*_shape.i64 sidecar of each case gives its sizes. Run with Debian's
python3-torch, python3-gensim and numpy:

    /usr/bin/python3 scripts/gen_similarity_fixtures.py
"""
import os
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from gensim.models import Word2Vec

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "similarity")


def save(name, arr, dtype):
    arr = np.ascontiguousarray(np.asarray(arr, dtype=dtype))
    arr.astype(np.dtype(dtype).newbyteorder("<")).tofile(os.path.join(OUT, name))


def pairs_case(rng):
    """cosine / dot / l2 of row pairs, with zero rows and norms around eps."""
    rows, dim = 40, 37  # 37: not a multiple of the 16-float lanes
    w = rng.standard_normal((rows, dim)).astype(np.float32)
    unit = w[9] / np.linalg.norm(w[9])
    w[0] = 0.0                       # zero vector
    w[1] = unit * np.float32(5e-9)   # below eps: clamped
    w[2] = unit * np.float32(1e-8)   # at eps
    w[3] = unit * np.float32(2e-8)   # just above eps
    w[4] = -w[5]                     # opposite
    w[6] = w[10] * np.float32(1e15)  # huge but finite products
    w[7] = w[8]                      # identical
    w[11] = w[12] * np.float32(3e-7) # tiny, well above eps
    pairs = [(a, b) for a in range(13) for b in range(13)]
    pairs += [tuple(p) for p in rng.integers(0, rows, size=(60, 2))]
    pairs = np.array(pairs, dtype=np.int64)

    t = torch.from_numpy(w)
    x, y = t[pairs[:, 0]], t[pairs[:, 1]]
    cos = F.cosine_similarity(x, y, dim=1)
    dot = torch.stack([torch.dot(t[a], t[b]) for a, b in pairs])
    l2 = torch.stack([torch.dist(t[a], t[b]) for a, b in pairs])

    save("pairs_shape.i64", [rows, dim, len(pairs)], np.int64)
    save("pairs_table.f32", w, np.float32)
    save("pairs_ids.i64", pairs.reshape(-1), np.int64)
    save("pairs_cosine.f32", cos.numpy(), np.float32)
    save("pairs_dot.f32", dot.numpy(), np.float32)
    save("pairs_l2.f32", l2.numpy(), np.float32)


def gensim_case(rng):
    """most_similar top-10 of a small Word2Vec trained on topic sentences."""
    topics, per_topic, dim = 12, 25, 50
    words = [f"w{t}_{i}" for t in range(topics) for i in range(per_topic)]
    sentences = []
    for _ in range(3000):
        t = rng.integers(topics)
        picks = rng.integers(per_topic, size=8)
        noise = rng.integers(len(words), size=2)
        sentences.append([words[t * per_topic + p] for p in picks] + [words[n] for n in noise])
    model = Word2Vec(sentences, vector_size=dim, window=5, min_count=1, workers=1, seed=3,
                     hashfxn=lambda s: zlib.crc32(s.encode()),
                     epochs=5)
    kv = model.wv
    queries = [0, 17, 40, 123, 250, len(kv) - 1]
    ids, scores = [], []
    for q in queries:
        for key, score in kv.most_similar(kv.index_to_key[q], topn=10):
            ids.append(kv.get_index(key))
            scores.append(score)
    save("gensim_shape.i64", [len(kv), dim, len(queries), 10], np.int64)
    save("gensim_table.f32", kv.vectors, np.float32)
    save("gensim_queries.i64", queries, np.int64)
    save("gensim_ids.i64", ids, np.int64)
    save("gensim_scores.f32", scores, np.float32)


def ranked(keys, ids, k):
    """Best first by key (higher is better), ties by lower id."""
    order = np.lexsort((ids, -keys))
    return order[:k]


def brute_case(rng):
    """numpy brute force, dot and l2, k = 1000, with a padding row, excluded
    query rows and duplicate rows. Small integer values make every score
    exact in float32, so ties are real and must go to the lower id."""
    rows, dim, padding, k = 1200, 24, 5, 1000
    w = rng.integers(-2, 3, size=(rows, dim)).astype(np.float32)
    w[100] = w[900]  # duplicates: equal scores, order by id
    w[101] = w[900]
    w[1100] = w[7]
    queries = rng.integers(-2, 3, size=(5, dim)).astype(np.float32)
    queries[1] = w[900]
    queries[2] = w[7]
    w[padding] = queries[0] * 2  # would top the dot list if not left out
    exclude = np.array([-1, 900, 7, -1, 5], dtype=np.int64)

    ids = np.arange(rows)
    out = {"dot": ([], []), "l2": ([], [])}
    for q, ex in zip(queries.astype(np.float64), exclude):
        keep = (ids != padding) & (ids != ex)
        dots = w.astype(np.float64) @ q
        dist = np.sqrt(((w.astype(np.float64) - q) ** 2).sum(1)).astype(np.float32)
        for name, keys in (("dot", dots.astype(np.float32)), ("l2", -dist)):
            sel = ranked(keys[keep], ids[keep], k)
            out[name][0].extend(ids[keep][sel])
            out[name][1].extend(-keys[keep][sel] if name == "l2" else keys[keep][sel])
    save("brute_shape.i64", [rows, dim, padding, len(queries), k], np.int64)
    save("brute_table.f32", w, np.float32)
    save("brute_queries.f32", queries, np.float32)
    save("brute_exclude.i64", exclude, np.int64)
    for name, (i, s) in out.items():
        save(f"brute_{name}_ids.i64", i, np.int64)
        save(f"brute_{name}_scores.f32", s, np.float32)


def float_case(rng):
    """numpy brute force top-10 on real-valued data (dot, l2, cosine). Only
    queries whose 10th and 11th scores lie far apart compared with float32
    rounding are kept, so the expected ids are unambiguous."""
    rows, dim, nq, k = 500, 40, 6, 10
    w = (rng.standard_normal((rows, dim)) * rng.uniform(0.2, 3.0, size=(rows, 1))).astype(
        np.float32)
    w64 = w.astype(np.float64)
    norms = np.maximum(np.linalg.norm(w64, axis=1), 1e-8)

    def keys_of(name, q):
        if name == "dot":
            return w64 @ q
        if name == "l2":
            return -np.sqrt(((w64 - q) ** 2).sum(1))
        return (w64 @ q) / norms / max(np.linalg.norm(q), 1e-8)

    def clear_cut(q):
        for name in ("dot", "l2", "cosine"):
            keys = keys_of(name, q)
            order = ranked(keys, np.arange(rows), k + 1)
            if abs(keys[order[k - 1]] - keys[order[k]]) < 1e-4 * max(1.0, abs(keys[order[0]])):
                return False
        return True

    queries = []
    while len(queries) < nq:
        q = rng.standard_normal(dim).astype(np.float32)
        if clear_cut(q.astype(np.float64)):
            queries.append(q)
    queries = np.array(queries)
    save("float_shape.i64", [rows, dim, nq, k], np.int64)
    save("float_table.f32", w, np.float32)
    save("float_queries.f32", queries, np.float32)
    for name in ("dot", "l2", "cosine"):
        all_ids, all_scores = [], []
        for q in queries.astype(np.float64):
            keys = keys_of(name, q)
            order = ranked(keys, np.arange(rows), k)
            all_ids.extend(order)
            all_scores.extend(np.abs(keys[order]) if name == "l2" else keys[order])
        save(f"float_{name}_ids.i64", all_ids, np.int64)
        save(f"float_{name}_scores.f32", all_scores, np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)
    torch.manual_seed(0)
    pairs_case(rng)
    gensim_case(rng)
    brute_case(rng)
    float_case(rng)


if __name__ == "__main__":
    main()
