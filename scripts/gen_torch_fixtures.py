#!/usr/bin/python3
"""Generates tests/fixtures/torch/: nn.Embedding / F.embedding_bag results
from real PyTorch (Debian python3-torch 1.13) for tests/test_table.c and
tests/test_bag.c. Every file is raw little-endian data: .f32 float32,
.i64 int64, row-major, no header; shapes are in the matching *_meta.i64.

Run: /usr/bin/python3 scripts/gen_torch_fixtures.py  (from anywhere)
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch")


def save(name, array, dtype):
    a = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    a.astype(a.dtype.newbyteorder("<")).tofile(os.path.join(OUT, name))


def f32(name, t):
    save(name + ".f32", t.detach().numpy() if torch.is_tensor(t) else t, np.float32)


def i64(name, t):
    save(name + ".i64", t.numpy() if torch.is_tensor(t) else t, np.int64)


def forward_with_padding():
    """nn.Embedding(24, 7, padding_idx=-4): init zeroes row 20; a 3x5 lookup."""
    torch.manual_seed(1)
    emb = torch.nn.Embedding(24, 7, padding_idx=-4)
    ids = torch.tensor([[0, 20, 23, 5, 5], [20, 1, 2, 3, 22], [7, 7, 7, 0, 19]])
    with torch.no_grad():
        out = emb(ids)
    i64("fwd_meta", [24, 7, emb.padding_idx])
    f32("fwd_weight", emb.weight)
    i64("fwd_ids", ids.flatten())
    f32("fwd_out", out.reshape(-1, 7))


def spread_rows(num, dim, seed):
    """Rows of varied length, so some exceed max_norm and some do not."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(num, dim, generator=g)
    scale = torch.rand(num, 1, generator=g) * 1.5 + 0.1
    return w * scale


def renorm_sequence(tag, p, max_norm, num, dim, seed):
    """In-place max_norm over a sequence of lookups with repeated ids (within
    a call and across calls): the output of each call and the final weights."""
    w0 = spread_rows(num, dim, seed)
    emb = torch.nn.Embedding(num, dim, max_norm=max_norm, norm_type=p, _weight=w0.clone())
    g = torch.Generator().manual_seed(seed + 1)
    calls = []
    for k in range(6):
        n = int(torch.randint(1, 3 * num // 2, (1,), generator=g))
        ids = torch.randint(0, num, (n,), generator=g)
        if k == 0:
            ids[:3] = ids[0]  # a repeated id within one call
        calls.append(ids)
    outs = []
    with torch.no_grad():
        for ids in calls:
            outs.append(emb(ids))
    # max_norm must be exact in float32 so the C test sees the same double
    assert float(np.float32(max_norm)) == max_norm
    i64(tag + "_meta", [num, dim, len(calls)] + [len(c) for c in calls])
    f32(tag + "_maxnorm", [max_norm, p])
    f32(tag + "_w0", w0)
    i64(tag + "_ids", torch.cat(calls))
    f32(tag + "_out", torch.cat(outs))
    f32(tag + "_wfinal", emb.weight)


def bags():
    """F.embedding_bag in sum/mean/max, per_sample_weights with sum, padding
    ids inside bags, an all-padding bag and empty bags; then mean with
    max_norm on a fresh copy."""
    num, dim, pad = 25, 19, 2
    w = spread_rows(num, dim, 7) * 3
    g = torch.Generator().manual_seed(8)
    sizes = [3, 0, 1, 40, 2, 0, 5, 2, 11]
    ids = torch.randint(0, num, (sum(sizes),), generator=g)
    offsets = torch.tensor([0] + sizes).cumsum(0)
    ids[offsets[0] + 1] = pad  # padding inside a bag
    ids[offsets[3] + 5] = pad
    ids[offsets[4]:offsets[5]] = pad  # a bag holding only padding
    ids[offsets[7]:offsets[7] + 2] = torch.tensor([9, 9])  # a duplicate
    psw = torch.rand(len(ids), generator=g) * 4 - 2
    starts = offsets[:-1]
    i64("bag_meta", [num, dim, pad, len(sizes)])
    f32("bag_weight", w)
    i64("bag_ids", ids)
    i64("bag_offsets", offsets)  # nbags + 1 entries: the C API's form
    f32("bag_psw", psw)
    for mode in ("sum", "mean", "max"):
        out = F.embedding_bag(ids, w, starts, mode=mode, padding_idx=pad)
        f32("bag_" + mode, out)
    out = F.embedding_bag(ids, w, starts, mode="sum", per_sample_weights=psw, padding_idx=pad)
    f32("bag_sum_psw", out)
    wn = w.clone()
    out = F.embedding_bag(ids, wn, starts, mode="mean", padding_idx=pad, max_norm=2.5)
    f32("bag_mean_maxnorm", out)
    f32("bag_mean_maxnorm_wfinal", wn)


def main():
    os.makedirs(OUT, exist_ok=True)
    forward_with_padding()
    # dim 21 = two AVX2 lanes of 8 + a tail of 5: exercises every step of
    # torch's p=2 kernel; dim 300 is a common word-vector width
    renorm_sequence("renorm_p2", 2.0, 3.5, 40, 21, 11)
    renorm_sequence("renorm_p2_d300", 2.0, 14.0, 12, 300, 12)
    renorm_sequence("renorm_p1", 1.0, 12.0, 40, 21, 13)
    renorm_sequence("renorm_p3", 3.0, 2.5, 40, 21, 14)
    renorm_sequence("renorm_pinf", math.inf, 1.75, 40, 21, 15)
    renorm_sequence("renorm_p05", 0.5, 40.0, 30, 9, 16)
    bags()


if __name__ == "__main__":
    main()
