#!/usr/bin/env python3
"""Writes tests/unit/base/data/float_pow2.tsv: every power of two a double holds
(2^-1074 .. 2^1023), each as Python's repr and as orjson writes it, the test vectors of
src/base/fmtfloat.c. Run with the test virtualenv (orjson comes with DSPy):
    .venv/bin/python scripts/gen_float_vectors.py > tests/unit/base/data/float_pow2.tsv"""
import math
import sys

import orjson


def main():
    w = sys.stdout.write
    w(f"# k\trepr(2.0**k)\torjson {orjson.__version__}\n")
    for k in range(-1074, 1024):
        v = math.ldexp(1.0, k)
        w(f"{k}\t{v!r}\t{orjson.dumps(v).decode()}\n")


if __name__ == "__main__":
    main()
