"""End-to-end tests of `dspyc bench` against the simulator: the figures match what the
simulator was told to do, the breakdown adds up, and the JSON report follows its schema."""
import json
import os
import subprocess

import jsonschema
import pytest

from conftest import DSPYC, ROOT

pytestmark = [pytest.mark.e2e]


def bench(*args, timeout=300):
    r = subprocess.run([DSPYC, "bench", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr + r.stdout
    return r


def test_median_matches_simulator_latency_and_json_validates(tmp_path):
    out = tmp_path / "bench.json"
    r = bench("--sim", "--latency-ms 30", "--iterations", 40, "--warmup", 2, "--concurrency", 4,
              "--json", out)
    doc = json.loads(out.read_text())
    with open(os.path.join(ROOT, "docs", "bench.schema.json")) as f:
        jsonschema.validate(doc, json.load(f))
    assert [s["name"] for s in doc["subjects"]] == ["predict", "cot"]
    for s in doc["subjects"]:
        lat = s["latency"]
        assert lat["count"] == 40 and s["errors"] == 0
        # The simulator holds each answer 30 ms; our own overhead is far below that (an upper
        # bound loose enough for a loaded machine: the breakdown below is the precise check).
        assert 30.0 <= lat["p50_ms"] < 60.0, lat
        assert lat["min_ms"] <= lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        b = s["breakdown_ms"]
        assert abs(b["format"] + b["lm"] + b["parse"] + b["other"] - b["total"]) < 1e-6
        assert abs(b["total"] - lat["mean_ms"]) < 0.05 * lat["mean_ms"]
        assert b["lm"] > 0.9 * b["total"]  # nearly all of it is the (simulated) LM
        t = s["throughput"]
        assert t["speedup"] > 2.0  # 4 threads against a 30 ms endpoint without a capacity limit
    assert doc["measurement_cost_ns"] < 1000
    assert "Single-call latency" in r.stdout and "Where the time goes" in r.stdout


def test_compare_and_models(tmp_path):
    first = tmp_path / "a.json"
    bench("--modules", "predict", "--iterations", 10, "--json", first)
    r = bench("--modules", "predict", "--iterations", 10, "--model",
              "openai/sim-a,openai/sim-b", "--compare", first)
    assert "predict@openai/sim-a" in r.stdout and "predict@openai/sim-b" in r.stdout
    assert "Change from the earlier run" in r.stdout


def test_failed_calls_are_noted():
    # A fifth of the calls fail with a 500: the run completes and the notes say so.
    r = bench("--modules", "predict", "--iterations", 60,
              "--sim", "--latency-ms 10 --fail-500 0.2 --seed 3")
    assert "calls failed" in r.stdout


def test_bad_flags_exit_2():
    r = subprocess.run([DSPYC, "bench", "--iterations", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--iterations" in r.stderr
