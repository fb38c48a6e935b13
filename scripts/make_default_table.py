#!/usr/bin/python3
"""Rewrites a fastText .vec for the built-in default table and checks it.

Usage: make_default_table.py IN.vec OUT.vec

Drops fastText's "</s>" line-marker row, rounds every value to 5 significant
digits (the file shrinks to about half; neighbour lists do not change), writes
a word2vec text file with a "<rows> <dim>" header, then reloads it with gensim
and prints the nearest neighbours of a few probe words for a check by eye.
"""
import sys

import numpy as np
from gensim.models import KeyedVectors

PROBES = ["gold", "king", "sheep", "water", "bread", "sword", "moses"]


def read_vec(path):
    with open(path, encoding="utf-8") as f:
        rows, dim = (int(x) for x in f.readline().split())
        words, vecs = [], []
        for line in f:
            parts = line.rstrip().split(" ")
            if parts[0] == "</s>":
                continue
            words.append(parts[0])
            vecs.append(np.array(parts[1:], dtype=np.float32))
    m = np.stack(vecs)
    assert m.shape[1] == dim, (m.shape, dim)
    return words, m


def write_vec(path, words, m):
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {m.shape[1]}\n")
        for w, row in zip(words, m):
            f.write(w + " " + " ".join(f"{v:.5g}" for v in row) + "\n")


def main():
    words, m = read_vec(sys.argv[1])
    write_vec(sys.argv[2], words, m)
    kv = KeyedVectors.load_word2vec_format(sys.argv[2], binary=False)
    print(f"{len(kv.index_to_key)} words x {kv.vector_size}", file=sys.stderr)
    for p in PROBES:
        if p in kv.key_to_index:
            near = ", ".join(w for w, _ in kv.most_similar(p, topn=8))
            print(f"#   {p:6s} -> {near}", file=sys.stderr)


if __name__ == "__main__":
    main()
