"""End-to-end tests of concurrent execution: `dspyc run --concurrency N` against `dspyc sim`
with injected faults (nothing lost, nothing duplicated, order kept, failures structured,
retries in the summary), a requests-per-minute limit measured from the simulator's record of
what it received, and backpressure from a tiny rate-limit wait queue."""
import json
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIG = "question -> answer"


def write_questions(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"What is {i} + {i + 1}?"}) + "\n")


def run(base_url, inp, out, *flags, timeout=120):
    return subprocess.run(
        [DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output", str(out),
         "--base-url", base_url, "--model", "openai/dspyc-sim", "--cache", "off", *flags],
        capture_output=True, text=True, timeout=timeout)


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_faults_lose_nothing_and_keep_order(tmp_path):
    n = 2000
    inp, clean, faulty = tmp_path / "in.jsonl", tmp_path / "clean.jsonl", tmp_path / "f.jsonl"
    write_questions(inp, n)
    _, url = start_sim("--latency-ms", "5")
    r = run(url, inp, clean, "--concurrency", "64")
    assert r.returncode == 0, r.stderr
    _, url = start_sim("--fail-429", "0.2", "--retry-after", "0.05", "--fail-500", "0.05",
                       "--fail-drop", "0.02", "--fail-timeout", "0.01",
                       "--timeout-hold-ms", "2000")
    r = run(url, inp, faulty, "--concurrency", "64", "--request-timeout", "1")
    assert r.returncode in (0, 1), r.stderr
    want, got = read_lines(clean), read_lines(faulty)
    assert len(got) == n
    assert [g["line"] for g in got] == list(range(1, n + 1))  # none lost or duplicated
    failed = [g for g in got if not g["ok"]]
    for w, g in zip(want, got):
        if g["ok"]:
            assert g["prediction"] == w["prediction"]
    for g in failed:
        assert g["error"]["class"] in ("rate_limit", "server", "network", "timeout")
        assert "attempts" in g["error"]["message"]
    assert len(failed) < n * 0.05
    summary = r.stderr
    assert f"{n} records, {n - len(failed)} ok, {len(failed)} failed" in summary
    retries = int(summary.split("LM traffic")[1].split(":")[1].split()[0])
    assert retries > 0


def test_rpm_limit_is_honoured(tmp_path):
    inp, out, rec = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rec.jsonl"
    rpm, n = 2400, 460  # 40/s: a one-second burst of 40, then 420 paced over ~10.5 s
    write_questions(inp, n)
    proc, url = start_sim("--record", str(rec))
    r = run(url, inp, out, "--concurrency", "64", "--rpm", str(rpm))
    assert r.returncode == 0, r.stderr
    assert "rate-limit waits" in r.stderr
    proc.terminate()
    proc.wait(10)
    ts = sorted(json.loads(line)["ts"] for line in open(rec))
    assert len(ts) == n
    steady = ts[40:]  # after the initial bucket (one second's worth) is spent
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    # Never faster than the limit (what the limiter promises; a little slack for the
    # timestamps' resolution). Slower is what a loaded machine does, so the lower bound
    # only checks that the run was paced, not stalled.
    assert 0.6 * rpm / 60 <= rate <= 1.03 * rpm / 60, rate
    # In no second of the steady part did more than the refill plus one bucket go out.
    most = max(sum(1 for t in steady[i:] if t < steady[i] + 1.0) for i in range(len(steady)))
    assert most <= rpm / 60 * 2 + 1, most


def test_backpressure_gives_busy_errors_not_a_hang(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_questions(inp, 300)
    _, url = start_sim("--latency-ms", "5")
    r = run(url, inp, out, "--concurrency", "256", "--rpm", "60", "--max-waiting", "4",
            timeout=60)
    assert r.returncode == 1, r.stderr
    got = read_lines(out)
    assert [g["line"] for g in got] == list(range(1, 301))
    busy = [g for g in got if not g["ok"]]
    assert len(busy) > 250
    assert all(g["error"]["class"] == "busy" for g in busy)
    assert "refused as busy" in r.stderr


def test_max_errors_stops_and_help_documents_flags(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_questions(inp, 500)
    _, url = start_sim("--fail-500", "1")
    r = run(url, inp, out, "--concurrency", "4", "--max-errors", "5", "--max-retries", "0")
    assert r.returncode == 1
    assert "--max-errors reached" in r.stderr
    got = read_lines(out)
    assert len(got) < 100
    assert [g["line"] for g in got] == list(range(1, len(got) + 1))
    h = subprocess.run([DSPYC, "run", "--help"], capture_output=True, text=True).stdout
    for flag in ("--concurrency", "--max-errors", "--rpm", "--tpm", "--max-retries",
                 "--request-timeout", "--max-waiting"):
        assert flag in h
