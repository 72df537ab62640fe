"""End-to-end tests of `dspyc run` under a low open-files limit: `--concurrency 512` with
`ulimit -n 256` used to fail a quarter to a half of the records as "Couldn't connect to
server" (the real cause: EMFILE). Now the soft limit is raised to the hard one at start,
connections are capped to what is left of it (with a warning saying so), and every record
succeeds."""
import json
import os
import re
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]


def run_limited(tmp_path, nofile, base, concurrency=512, n=1000, cache="off"):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(n)))
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL"):
        e.pop(k, None)
    # Through a shell, as a user would set it: `ulimit -S -n` (soft) / `-H -n` (hard).
    soft, hard = nofile
    endpoint = f"--base-url {base} --model m" if base else "--sim '--latency-ms 200'"
    cmd = (f"ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" run --signature "
           f"'question -> answer' --input {inp} --output {out} {endpoint} "
           f"--cache {cache} --concurrency {concurrency}")
    r = subprocess.run(["sh", "-c", cmd, DSPYC], capture_output=True, text=True, env=e,
                       timeout=300)
    recs = [json.loads(l) for l in out.read_text().splitlines()] if out.exists() else []
    return r, recs


@pytest.mark.parametrize("cache", ["off", "mem"])  # event loop / worker pool
def test_low_hard_limit_caps_connections_and_loses_nothing(tmp_path, cache):
    _, base = start_sim("--latency-ms", 200)
    r, recs = run_limited(tmp_path, (256, 256), base, cache=cache)
    assert r.returncode == 0, r.stderr
    assert len(recs) == 1000 and all(rec["ok"] for rec in recs)
    m = re.search(r"open-files limit is 256 \(hard limit 256\), room for (\d+) connections: "
                  r"--concurrency 512 lowered to (\d+)", r.stderr)
    assert m, r.stderr
    assert 100 < int(m.group(1)) < 256
    assert f"LM traffic (concurrency {m.group(2)})" in r.stderr
    assert "Couldn't connect" not in r.stderr


def test_soft_limit_is_raised_to_the_hard_one(tmp_path):
    _, base = start_sim("--latency-ms", 200)
    r, recs = run_limited(tmp_path, (128, 4096), base)
    assert r.returncode == 0, r.stderr
    assert "open-files limit" not in r.stderr  # 4,096 leaves room for 512: no cap
    assert "LM traffic (concurrency 512)" in r.stderr
    assert len(recs) == 1000 and all(rec["ok"] for rec in recs)


def room(stderr):
    m = re.search(r"room for (\d+) connections", stderr)
    assert m, stderr
    return int(m.group(1))


def test_builtin_simulator_counts_both_ends(tmp_path):
    # No --base-url: the in-process simulator holds the server end of each connection, so
    # half the room is left for the client's.
    _, base = start_sim("--latency-ms", 200)
    r_ext, _ = run_limited(tmp_path, (256, 256), base, n=300)
    r, recs = run_limited(tmp_path, (256, 256), None, n=300)
    assert r.returncode == 0, r.stderr
    assert len(recs) == 300 and all(rec["ok"] for rec in recs)
    assert room(r.stderr) <= room(r_ext.stderr) // 2 + 4


def test_concurrency_above_the_maximum_names_it():
    r = subprocess.run([DSPYC, "run", "--signature", "a -> b", "--input", "-", "--output", "-",
                        "--concurrency", "5000"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "--concurrency: '5000' is not a whole number in [1, 4096]" in r.stderr
    h = subprocess.run([DSPYC, "run", "--help"], capture_output=True, text=True, timeout=30)
    assert "at most 4096" in h.stdout
