"""dspyc's one float formatter (src/base/fmtfloat.c) against Python's repr and orjson on
random doubles: random bit patterns (every exponent, subnormals included), short decimals
as LMs and users write them, and neighbours of powers of two and ten, where the rounding
interval is lopsided. Run: DSPYC_BUILD=build .venv/bin/python -m pytest tests/compat/test_float.py
"""
import math
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compat]

orjson = pytest.importorskip("orjson")

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(os.environ.get("DSPYC_BUILD", ROOT / "build")) / "compat_float_fmt"
if not TOOL.is_absolute():
    TOOL = ROOT / TOOL


def _doubles(n, seed=20261202):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        elif kind < 0.75:
            v = float(f"{rng.randrange(1, 10**rng.randrange(1, 17))}e{rng.randrange(-30, 30)}")
        else:
            base = math.ldexp(1.0, rng.randrange(-1074, 1024)) if rng.random() < 0.7 \
                else 10.0 ** rng.randrange(-300, 300)
            v = base
            for _ in range(rng.randrange(0, 3)):
                v = math.nextafter(v, math.inf if rng.random() < 0.5 else 0.0)
        if math.isfinite(v):
            out.append(v if rng.random() < 0.8 else -v)
    return out


def test_random_doubles_print_as_python_and_orjson():
    if not TOOL.exists():
        pytest.skip(f"{TOOL} not built (cmake --build <dir> --target compat_float_fmt)")
    values = _doubles(60000)
    stdin = "".join(f"{struct.unpack('<Q', struct.pack('<d', v))[0]:016x}\n" for v in values)
    proc = subprocess.run([str(TOOL)], input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(values)
    bad = []
    for v, line in zip(values, lines):
        py, oj, oj38 = line.split("\t")
        want = orjson.dumps(v).decode()
        if py != repr(v) or oj != want or oj38 != want.replace("e+", "e"):
            bad.append((v.hex(), repr(v), want, line))
    assert not bad, f"{len(bad)} of {len(values)} differ, e.g. {bad[:5]}"
