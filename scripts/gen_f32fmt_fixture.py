#!/usr/bin/python3
"""Writes tests/fixtures/f32fmt_numpy.txt: float32 values with numpy's shortest digits.

Usage: gen_f32fmt_fixture.py OUT.txt

numpy prints a float32 with Dragon4 in "unique" mode: the shortest digits
that identify the float among float32 values, correctly rounded. That is an
implementation independent of proto/f32fmt.c, so tests/test_f32fmt.c checks
that both agree on the digits and the decimal exponent of each value here
(the layouts differ slightly: numpy's repr chooses plain or scientific by the
binary value, f32fmt by the decimal).

Each line: "<bits as 8 hex digits> <digits> <exp10>" for |value| =
d1.d2...dn * 10^exp10, trailing zeros dropped (1.5e-07 is "15 -7", zero is
"0 0"). Values: edge
cases (zeros, subnormals, powers of two and their neighbours, FLT_MAX, values
near powers of ten), uniformly random bit patterns, and normal float32 values
of embedding-like scales.
"""
import sys

import numpy as np

SEED = 20240601
N_RANDOM_BITS = 1500
N_NORMAL = 1500


def edge_patterns():
    pats = {0x00000000, 0x80000000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x007FFFFF}
    pats.update(range(1, 40))  # smallest subnormals
    for biased in range(0, 255):
        base = biased << 23
        pats.update({base, base + 1, (base - 1) & 0xFFFFFFFF, base | 0x7FFFFF})
    for p in range(-45, 39):
        v = np.float32(10.0**p)
        if np.isfinite(v) and v != 0:
            b = int(v.view(np.uint32))
            pats.update({b - 1, b, b + 1})
    return sorted(p for p in pats if (p >> 23) & 0xFF != 0xFF)


def digits_and_exp(bits):
    v = np.array([bits], dtype=np.uint32).view(np.float32)[0]
    text = np.format_float_scientific(abs(v), unique=True, trim="-")
    mant, exp = text.split("e")
    digits = mant.replace(".", "").rstrip("0") or "0"
    return digits, int(exp)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rng = np.random.default_rng(SEED)
    pats = edge_patterns()
    rand = rng.integers(0, 2**32, size=N_RANDOM_BITS, dtype=np.uint64)
    pats += [int(p) for p in rand if (int(p) >> 23) & 0xFF != 0xFF]
    scales = 10.0 ** rng.uniform(-3.0, 1.0, size=N_NORMAL)
    normal = (rng.standard_normal(N_NORMAL) * scales).astype(np.float32)
    pats += [int(b) for b in normal.view(np.uint32)]
    with open(sys.argv[1], "w", encoding="ascii") as f:
        for bits in pats:
            digits, exp = digits_and_exp(bits)
            f.write(f"{bits:08x} {digits} {exp}\n")


if __name__ == "__main__":
    main()
