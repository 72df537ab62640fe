"""End-to-end tests of honest `dspyc bench` reports: failed calls never enter latency or
throughput figures; a subject whose calls all failed (a 401, or a simulator failing every
call) is reported as FAILED, in the text and the JSON, and the exit status says so."""
import json
import os
import subprocess

import jsonschema
import pytest

from conftest import DSPYC, ROOT, start_sim


def valid(doc):
    with open(os.path.join(ROOT, "docs", "bench.schema.json")) as f:
        jsonschema.validate(doc, json.load(f))
    return doc

pytestmark = [pytest.mark.e2e]


def bench(*args, env_extra=None, timeout=300):
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL", "ITERATIONS"):
        e.pop(k, None)
    e.update(env_extra or {})
    return subprocess.run([DSPYC, "bench", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


@pytest.mark.parametrize("how", ["401", "fail-500"])
def test_all_calls_failing_is_reported_as_failed(tmp_path, how):
    if how == "401":
        _, base = start_sim("--api-key", "sk-right")
        extra = {"OPENAI_API_KEY": "sk-wrong"}
    else:
        _, base = start_sim("--fail-500", 1)
        extra = {}
    out = tmp_path / "b.json"
    r = bench("--base-url", base, "--model", "m", "--iterations", 12, "--warmup", 1,
              "--max-retries", 0, "--json", out, env_extra=extra)
    assert r.returncode == 1, r.stderr
    assert "predict FAILED: all its calls failed" in r.stderr
    assert "cot FAILED" in r.stderr
    text = r.stdout
    assert "predict                  FAILED: all 24 calls failed" in text
    assert ("auth" if how == "401" else "server") in text
    assert "q/s" in text  # the header is there, the figures are not
    for line in text.splitlines():
        if line.strip().startswith(("predict ", "cot ")):
            assert "FAILED" in line, line  # no row of numbers for a failed subject
    doc = valid(json.loads(out.read_text()))
    for s in doc["subjects"]:
        assert s["status"] == "failed"
        assert s["latency"] is None and s["throughput"] is None and s["breakdown_ms"] is None
        assert s["calls"] == {"sequential_ok": 0, "sequential_failed": 12, "parallel_ok": 0,
                              "parallel_failed": 12}
        assert s["error"].startswith("auth" if how == "401" else "server")


def test_partial_failures_are_left_out_of_the_figures(tmp_path):
    _, base = start_sim("--fail-500", 0.5, "--seed", 7)
    out = tmp_path / "b.json"
    r = bench("--base-url", base, "--model", "m", "--modules", "predict", "--iterations", 40,
              "--warmup", 0, "--max-retries", 0, "--json", out)
    assert r.returncode == 0, r.stderr  # measured, though some calls failed
    doc = valid(json.loads(out.read_text()))
    s = doc["subjects"][0]
    c = s["calls"]
    assert s["status"] == "ok"
    assert 0 < c["sequential_failed"] < 40 and 0 < c["parallel_failed"] < 40
    assert c["sequential_ok"] + c["sequential_failed"] == 40
    # Latency is over the successful calls only; calls/s is successful calls per second.
    assert s["latency"]["count"] == c["sequential_ok"]
    t = s["throughput"]
    assert abs(t["sequential_qps"] - c["sequential_ok"] / t["sequential_s"]) < 0.01 * t["sequential_qps"]
    assert abs(t["parallel_qps"] - c["parallel_ok"] / t["parallel_s"]) < 0.01 * t["parallel_qps"]
    assert "are left out of every figure" in r.stdout


def test_compare_with_a_failed_run_says_so(tmp_path):
    _, good = start_sim()
    _, bad = start_sim("--fail-500", 1)
    old = tmp_path / "old.json"
    r = bench("--base-url", good, "--model", "m", "--modules", "predict", "--iterations", 5,
              "--json", old)
    assert r.returncode == 0, r.stderr
    r = bench("--base-url", bad, "--model", "m", "--modules", "predict", "--iterations", 5,
              "--max-retries", 0, "--compare", old)
    assert r.returncode == 1
    assert "predict: failed now; nothing to compare" in r.stdout
