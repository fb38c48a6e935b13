#!/usr/bin/python3
"""Generates tests/fixtures/loaders/: embedding files written by the real tools
(gensim, numpy, torch, the fastText CLI) plus, for each, the exact float32
values a loader must produce as a raw little-endian .f32 dump and, for files
with tokens, a .tokens.txt (one token per line, in file order).

Run from anywhere with Debian's python3 (gensim 4.2, numpy 1.24, torch 1.13):
    /usr/bin/python3 scripts/gen_loader_fixtures.py
The C tests read these files and never need Python.

safetensors: the `safetensors` Python package is not packaged for Debian 12
(`apt-cache policy python3-safetensors` finds nothing), so this script writes
the documented format itself: an 8-byte little-endian header length, a JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]}} (plus
"__metadata__") padded with spaces to a multiple of 8 bytes as the reference
writer pads it, then the tensors' bytes. The tensor bytes come from numpy
(F32, F16) and torch (BF16 conversion).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from fractions import Fraction

import numpy as np
import torch
from gensim.models import KeyedVectors

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "loaders")


def path(name):
    return os.path.join(OUT, name)


def dump_f32(name, a):
    a = np.ascontiguousarray(np.asarray(a, dtype="<f4"))
    with open(path(name), "wb") as f:
        f.write(a.tobytes())


def dump_tokens(name, tokens):
    with open(path(name), "wb") as f:
        for t in tokens:
            assert "\n" not in t
            f.write(t.encode("utf8") + b"\n")


def exact_f32(s):
    """The float32 nearest the decimal string s, ties to even, computed with
    exact rational arithmetic (a reference independent of any strtof)."""
    x = Fraction(s)
    if x == 0:
        return np.float32(-0.0) if s.lstrip().startswith("-") else np.float32(0.0)
    c = np.float32(float(s))
    best, best_d = None, None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        if not np.isfinite(cand):
            continue
        d = abs(Fraction(float(cand)) - x)
        if best is None or d < best_d or (d == best_d and
                                          int(cand.view(np.uint32)) % 2 == 0):
            best, best_d = cand, d
    return best


def parse_text_rows(lines):
    tokens, rows = [], []
    for line in lines:
        parts = line.rstrip("\r\n").rstrip(" ").split(" ")
        tokens.append(parts[0])
        rows.append([exact_f32(v) for v in parts[1:]])
    return tokens, np.array(rows, dtype=np.float32)


# ---- word2vec text and binary, by gensim ---------------------------------

TOKENS = [
    "the", "of", "and", "in", "king", "queen", "man", "woman", "gold", "silver",
    "</s>", "café", "naïve", "日本", "Ελλάδα", "🙂", "hello,", "a-b", "'s", "x",
    "Zürich", "(", ")", "..", "über", "NULL", "0", "-1", "1e5", "nan",
    "inf", "naïve2", "ŋ", "ß", "a_b", "AbC", "abc", "tab\u00a0nbsp", "end", "last",
]


def w2v_vectors(rng, n, dim):
    v = (rng.standard_normal((n, dim)) * rng.choice([1e-3, 0.1, 1, 30], size=(n, 1)))
    v = v.astype(np.float32)
    # edge values: signed zero, subnormals, the float32 extremes, exact ints
    v[1, :10] = np.array([-0.0, 1e-40, 1.4e-45, 1.1754944e-38, 3.4028235e38,
                          -3.4028235e38, 1.0, 16777216.0, 0.1, -123456.79], dtype=np.float32)
    v[2, :4] = np.array([0.0, 1e-7, 9.999999e-5, 65504.0], dtype=np.float32)
    return v


def gen_word2vec(rng):
    dim = 24
    vecs = w2v_vectors(rng, len(TOKENS), dim)
    kv = KeyedVectors(dim)
    kv.add_vectors(TOKENS, vecs)
    kv.save_word2vec_format(path("w2v.txt"), binary=False)
    kv.save_word2vec_format(path("w2v.bin"), binary=True)
    for name, binary in (("w2v.txt", False), ("w2v.bin", True)):
        back = KeyedVectors.load_word2vec_format(path(name), binary=binary)
        assert back.index_to_key == TOKENS, name
        assert np.array_equal(back.vectors.view(np.uint32), vecs.view(np.uint32)), name
    # word2vec.c's own binary layout: a "\n" after every row
    with open(path("w2v_nl.bin"), "wb") as f:
        f.write(f"{len(TOKENS)} {dim}\n".encode())
        for t, row in zip(TOKENS, vecs):
            f.write(t.encode("utf8") + b" " + row.astype("<f4").tobytes() + b"\n")
    back = KeyedVectors.load_word2vec_format(path("w2v_nl.bin"), binary=True)
    assert back.index_to_key == TOKENS
    assert np.array_equal(back.vectors.view(np.uint32), vecs.view(np.uint32))
    dump_f32("w2v.f32", vecs)
    dump_tokens("w2v.tokens.txt", TOKENS)


# ---- GloVe text, written as glove.c writes it ----------------------------

def gen_glove(rng):
    # glove.c: fprintf(fout, "%s", word) then fprintf(fout, " %lf", w) per value
    n, dim = 30, 10
    words = [f"w{i}" for i in range(n - 4)] + ["the", ",", "ünï", "<unk>"]
    w = rng.standard_normal((n, dim)) * 0.5
    w[0, :3] = [0.0, -0.0000004, 123.4567891]
    lines = [w_ + "".join(" %f" % x for x in row) + "\n" for w_, row in zip(words, w)]
    with open(path("glove.txt"), "wb") as f:
        f.write("".join(lines).encode("utf8"))
    tokens, ref = parse_text_rows(lines)
    assert tokens == words
    back = KeyedVectors.load_word2vec_format(path("glove.txt"), binary=False, no_header=True)
    assert back.index_to_key == words
    assert np.array_equal(back.vectors.view(np.uint32), ref.view(np.uint32))
    dump_f32("glove.f32", ref)
    dump_tokens("glove.tokens.txt", tokens)


# ---- fastText .vec, by the fastText CLI ----------------------------------

def gen_fasttext(rng):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
             "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi"]
    tmp = tempfile.mkdtemp()
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            for _ in range(400):
                f.write(" ".join(rng.choice(words, size=12)) + "\n")
        out = os.path.join(tmp, "model")
        subprocess.run(["fasttext", "skipgram", "-input", corpus, "-output", out, "-dim", "8",
                        "-minCount", "1", "-epoch", "2", "-thread", "1", "-minn", "0",
                        "-maxn", "0"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.copy(out + ".vec", path("fasttext.vec"))
    finally:
        shutil.rmtree(tmp)
    with open(path("fasttext.vec"), encoding="utf8") as f:
        lines = f.readlines()
    tokens, ref = parse_text_rows(lines[1:])
    back = KeyedVectors.load_word2vec_format(path("fasttext.vec"), binary=False)
    assert back.index_to_key == tokens
    assert np.array_equal(back.vectors.view(np.uint32), ref.view(np.uint32))
    dump_f32("fasttext.f32", ref)
    dump_tokens("fasttext.tokens.txt", tokens)


# ---- numpy .npy ----------------------------------------------------------

def gen_npy(rng):
    a = rng.standard_normal((37, 20)).astype(np.float32)
    np.save(path("f32.npy"), a)
    dump_f32("f32.f32", a)

    a = rng.standard_normal((40, 32)).astype(np.float32)  # rows exactly a stride wide
    np.save(path("f32_wide.npy"), a)
    dump_f32("f32_wide.f32", a)

    d = rng.standard_normal((25, 7)) * 10.0 ** rng.integers(-30, 30, size=(25, 7))
    d[0, :3] = [1.0 + 2.0 ** -24, 1.0 + 3 * 2.0 ** -24, 3.4028235e38]  # ties, max
    np.save(path("f64.npy"), d)
    dump_f32("f64.f32", d.astype(np.float32))

    # every finite non-negative half (sign bit 0, exponent < 31): 31744 values
    bits = np.arange(0, 31 * 1024, dtype=np.uint16)
    h = bits.view(np.float16).reshape(1984, 16)
    np.save(path("f16.npy"), h)
    dump_f32("f16.f32", h.astype(np.float32))

    b = rng.standard_normal((10, 5)).astype(">f4")
    np.save(path("f32_be.npy"), b)
    dump_f32("f32_be.f32", b.astype("<f4"))

    v = rng.standard_normal((6, 3)).astype(np.float32)
    for ver in ((2, 0), (3, 0)):
        name = "f32_v%d.npy" % ver[0]
        with open(path(name), "wb") as f:
            np.lib.format.write_array(f, v, version=ver)
    dump_f32("f32_v23.f32", v)

    # error cases
    np.save(path("err_fortran.npy"), np.asfortranarray(rng.standard_normal((5, 3)).astype(np.float32)))
    np.save(path("err_3d.npy"), np.zeros((2, 3, 4), dtype=np.float32))
    np.save(path("err_1d.npy"), np.zeros(5, dtype=np.float32))
    np.save(path("err_int32.npy"), np.arange(15, dtype=np.int32).reshape(5, 3))
    for name in ("f32.npy", "f64.npy", "f16.npy", "f32_be.npy", "f32_v2.npy", "f32_v3.npy"):
        back = np.load(path(name))
        assert back.ndim == 2


# ---- safetensors, the documented layout written here ---------------------

ST_DTYPE = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4"}


def write_safetensors(name, tensors, metadata=None):
    """tensors: {name: (dtype, shape, raw bytes)}; laid out as the reference
    writer does: by decreasing element size, then by name."""
    size = {"F64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2}
    order = sorted(tensors, key=lambda k: (-size[tensors[k][0]], k))
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for k in order:
        dtype, shape, raw = tensors[k]
        header[k] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf8")
    h += b" " * (-len(h) % 8)
    with open(path(name), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(name):
    """An independent reader to check what was written."""
    with open(path(name), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        raw = data[8 + n + b:8 + n + e]
        if v["dtype"] == "BF16":
            t = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).float().numpy()
        else:
            t = np.frombuffer(raw, dtype=ST_DTYPE[v["dtype"]]).astype(np.float32)
        out[k] = t.reshape(v["shape"])
    return out


def bf16_bytes(a):
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().astype("<i2").tobytes(), t.float().numpy()


def gen_safetensors(rng):
    w = rng.standard_normal((12, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    write_safetensors("st_one.safetensors",
                      {"emb.weight": ("F32", w.shape, w.astype("<f4").tobytes()),
                       "bias": ("F32", bias.shape, bias.astype("<f4").tobytes())},
                      metadata={"format": "pt"})
    dump_f32("st_one.f32", w)

    a = rng.standard_normal((9, 6)).astype(np.float32)
    b = (rng.standard_normal((7, 4)) * 100).astype(np.float16)
    c_src = rng.standard_normal((50, 8)).astype(np.float32) * 1e3
    c_src[0, :4] = [1e-39, 3.3e38, -0.0, 1.0]  # a subnormal, near max, signed zero
    c_raw, c = bf16_bytes(c_src)
    write_safetensors("st_multi.safetensors",
                      {"a": ("F32", a.shape, a.astype("<f4").tobytes()),
                       "b": ("F16", b.shape, b.astype("<f2").tobytes()),
                       "c": ("BF16", c.shape, c_raw),
                       "ids": ("I32", (4,), np.arange(4, dtype="<i4").tobytes())})
    dump_f32("st_multi_a.f32", a)
    dump_f32("st_multi_b.f32", b.astype(np.float32))
    dump_f32("st_multi_c.f32", c)

    back = read_safetensors("st_multi.safetensors")
    for k, ref in (("a", a), ("b", b.astype(np.float32)), ("c", c)):
        assert np.array_equal(back[k].view(np.uint32), ref.view(np.uint32)), k
    assert np.array_equal(read_safetensors("st_one.safetensors")["emb.weight"], w)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240601)
    gen_word2vec(rng)
    gen_glove(rng)
    gen_fasttext(rng)
    gen_npy(rng)
    gen_safetensors(rng)
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    sys.exit(main())
