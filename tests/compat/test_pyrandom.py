"""The optimizers' Python-compatible generator (src/optimize/rng.c) against CPython's
random.Random on the same seeds: every draw DSPy and GEPA make (random, getrandbits,
_randbelow, randint, shuffle, sample on both of its paths, weighted choices) must agree
exactly, so that a seed picks the examples DSPy picks.
Run: DSPYC_BUILD=build .venv/bin/python -m pytest tests/compat/test_pyrandom.py"""
import os
import random
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compat]

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(os.environ.get("DSPYC_BUILD", ROOT / "build")) / "compat_pyrandom"
if not TOOL.is_absolute():
    TOOL = ROOT / TOOL

SEEDS = [0, 1, 2, 9, 42, 2**31 - 1, 2**32 - 1, 2**32, 2**32 + 7, 123456789012345, 2**62]


def script(seed):
    """The requests and what CPython answers to each, drawn in one sequence per seed."""
    plan = random.Random(seed ^ 0x5EED)  # what to ask for: varied sizes and kinds
    py = random.Random(seed)
    reqs, want = [f"seed {seed}"], ["ok"]
    for _ in range(60):
        kind = plan.choice(["random", "bits", "below", "randint", "shuffle", "sample",
                            "sample_big", "choices"])
        if kind == "random":
            reqs.append("random")
            want.append(repr(py.random()))
        elif kind == "bits":
            k = plan.choice([0, 1, 5, 31, 32, 33, 53, 63, 64])
            reqs.append(f"bits {k}")
            want.append(str(py.getrandbits(k)))
        elif kind == "below":
            n = plan.choice([1, 2, 3, 7, 50, 100, 2**31, 2**32 + 5, 10**15])
            reqs.append(f"below {n}")
            want.append(str(py._randbelow(n)))
        elif kind == "randint":
            a = plan.randrange(0, 5)
            b = a + plan.randrange(0, 20)
            reqs.append(f"randint {a} {b}")
            want.append(str(py.randint(a, b)))
        elif kind == "shuffle":
            n = plan.choice([0, 1, 2, 3, 10, 50, 100])
            x = list(range(n))
            py.shuffle(x)
            reqs.append(f"shuffle {n}")
            want.append(" ".join(map(str, x)))
        elif kind in ("sample", "sample_big"):  # the pool path, and the set path
            n = plan.choice([5, 10, 21, 50]) if kind == "sample" else plan.choice([100, 1000])
            k = plan.randrange(0, min(n, 40) + 1)
            reqs.append(f"sample {n} {k}")
            want.append(" ".join(map(str, py.sample(range(n), k))))
        else:
            w = [plan.choice([0.0, 0.25, 1.0, 36.0, 71.0]) for _ in range(plan.randrange(1, 8))]
            w[-1] = w[-1] or 1.0  # total > 0
            got = py.choices(range(len(w)), weights=w, k=1)[0]
            reqs.append("choices " + " ".join(map(repr, w)))
            want.append(str(got))
    return reqs, want


@pytest.mark.parametrize("seed", SEEDS)
def test_draws_equal_cpython(seed):
    reqs, want = script(seed)
    r = subprocess.run([str(TOOL)], input="\n".join(reqs) + "\n", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = r.stdout.splitlines()
    assert len(got) == len(want)
    for q, g, w in zip(reqs, got, want):
        assert g == w, f"seed {seed}: {q!r}: ours {g!r}, CPython {w!r}"


def test_dspy_random_search_schedule_draws():
    """DSPy's BootstrapFewShotWithRandomSearch seed schedule: Random(s).shuffle(trainset) and
    Random(s).randint(1, max_bootstrapped_demos) for s = 0, 1, ..."""
    reqs, want = [], []
    for s in range(16):
        x = list(range(50))
        random.Random(s).shuffle(x)
        reqs += [f"seed {s}", "shuffle 50", f"seed {s}", "randint 1 4"]
        want += ["ok", " ".join(map(str, x)), "ok", str(random.Random(s).randint(1, 4))]
    r = subprocess.run([str(TOOL)], input="\n".join(reqs) + "\n", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == want
