"""End-to-end tests of stopping and resuming `dspyc run`: SIGTERM and SIGINT against a slow
and a hanging simulator stop the run promptly, leave only whole, valid records (one per
finished input line), print the summary; a second SIGINT exits at once; SIGKILL mid-run and
`--resume` give exactly one record per input line, the same predictions as an uninterrupted
run."""
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

SIG = "question -> answer"


def env():
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL"):
        e.pop(k, None)
    e["DSPYC_CACHE"] = "off"
    return e


def write_inputs(path, n):
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?"}) + "\n"
                            for i in range(n)))


def start_run(base, inp, out, *extra, stdin=subprocess.DEVNULL):
    return subprocess.Popen([DSPYC, "run", "--signature", SIG, "--input", str(inp),
                             "--output", str(out), "--base-url", base, "--model", "m",
                             *extra], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def records(path):
    """Every line of the output parsed; a half line or invalid JSON fails the test."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the output ends inside a line"
    return [json.loads(l) for l in data.decode().splitlines()]


def stop_and_wait(proc, sig, bound=5.0):
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"dspyc run did not stop within 30 s of {sig!r}")
    took = time.monotonic() - t0
    assert took < bound, f"took {took:.1f} s to stop"
    return out, err


def answered(base):
    with urllib.request.urlopen(base.replace("/v1", "/admin/stats"), timeout=10) as r:
        return json.load(r)["by_status"].get("200", 0)


def written_count(stderr):
    for line in stderr.splitlines():
        if "records written" in line:
            return int(line.split("records written")[0].split(":")[-1].strip())
    pytest.fail("no 'records written' in:\n" + stderr)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("cache", ["off", "mem"])  # event loop / worker pool
def test_signal_stops_slow_run_promptly(tmp_path, sig, code, cache):
    # Every call takes 30 s: without cancellation the run could not stop for 30 s.
    _, base = start_sim("--latency-ms", 30000)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, 50)
    proc = start_run(base, inp, out, "--concurrency", "8", "--cache", cache)
    time.sleep(1.0)
    _, err = stop_and_wait(proc, sig)
    assert proc.returncode == code, err
    assert records(out) == []  # nothing finished, nothing written
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert f"stopped by {name}: 0 records written" in err
    assert "run again with --resume" in err
    assert "dspyc run: 0 records, 0 ok, 0 failed" in err  # the summary


def test_sigint_during_retry_waits_stops_promptly(tmp_path):
    # Every answer is a 429 asking for 30 s: the calls sit in Retry-After waits.
    _, base = start_sim("--fail-429", 1, "--retry-after", 30)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, 20)
    proc = start_run(base, inp, out, "--max-retries", "10")
    time.sleep(1.0)
    _, err = stop_and_wait(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert records(out) == []
    assert "stopped by SIGINT: 0 records written" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_against_hanging_endpoint_keeps_finished_records(tmp_path, sig):
    # Half the requests are held unanswered for a minute (and would be retried); the others
    # answer at once. The finished ones sit in the output buffer when the signal comes.
    _, base = start_sim("--fail-timeout", 0.5, "--timeout-hold-ms", 60000, "--seed", 3)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, 60)
    proc = start_run(base, inp, out, "--concurrency", "6")
    time.sleep(1.5)
    _, err = stop_and_wait(proc, sig)
    recs = records(out)
    assert len(recs) == written_count(err)
    assert recs, "some calls answered at once and must have been written"
    assert all(r["ok"] for r in recs)  # no cut-off call written as a failure
    assert len({r["line"] for r in recs}) == len(recs)
    assert f"dspyc run: {len(recs)} records, {len(recs)} ok, 0 failed" in err


def test_second_sigint_exits_at_once(tmp_path):
    # Output to a pipe nobody reads: once it is full, writing blocks and the first SIGINT
    # cannot finish (it would write the finished records); the second exits at once.
    _, base = start_sim()
    inp = tmp_path / "in.jsonl"
    write_inputs(inp, 3000)
    proc = start_run(base, inp, "-", "--concurrency", "32")
    time.sleep(2.0)  # far more than 64 KiB of records are done by now
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # still blocked writing
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 130
    assert "records, " not in proc.stderr.read()  # exited at once: no summary
    data = proc.stdout.read()
    # A pipe takes part of a write when it is full, so only the last line may be cut.
    lines = data.split("\n")
    assert len(lines) > 100
    for line in lines[:-1]:
        json.loads(line)
    proc.stdout.close()
    proc.stderr.close()


def test_sigint_while_waiting_on_an_input_pipe(tmp_path):
    # Input from a pipe that stays open and silent: the signal must not wait for a line.
    _, base = start_sim()
    out = tmp_path / "out.jsonl"
    for k, cache in enumerate(("off", "mem"), 1):  # the feeder thread / a pool worker reads
        proc = start_run(base, "-", out, "--cache", cache, stdin=subprocess.PIPE)
        proc.stdin.write(json.dumps({"question": "first"}) + "\n")
        proc.stdin.flush()
        # The record is answered (a loaded machine may take seconds), then waits on the pipe.
        deadline = time.monotonic() + 30
        while answered(base) < k and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        _, err = stop_and_wait(proc, signal.SIGINT, bound=3.0)
        assert proc.returncode == 130, err
        assert [r["line"] for r in records(out)] == [1]
        assert "stopped by SIGINT: 1 records written" in err


def uninterrupted(tmp_path, base, inp):
    ref = tmp_path / "ref.jsonl"
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(ref), "--base-url", base, "--model", "m"], capture_output=True,
                       text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return {rec["line"]: rec for rec in records(ref)}


def test_sigkill_then_resume_gives_one_record_per_line(tmp_path):
    n = 400
    _, slow = start_sim("--latency-ms", 20)
    _, fast = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, n)
    proc = start_run(slow, inp, out, "--concurrency", "4")
    time.sleep(1.5)  # about a quarter done; the last few records still in the buffer
    proc.kill()
    proc.communicate()
    before = records(out)  # whole lines, a prefix of the run
    assert 0 < len(before) < n
    # A half line, as a kill during a write would leave.
    with open(out, "a") as f:
        f.write('{"line": 9999, "ok": tr')
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(out), "--base-url", fast, "--model", "m", "--resume"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dropped a half line" in r.stderr
    assert f"{len(before)} input lines already have a record" in r.stderr
    assert f"dspyc run: {n - len(before)} records" in r.stderr  # only the rest ran
    recs = records(out)
    lines = [rec["line"] for rec in recs]
    assert sorted(lines) == list(range(1, n + 1))  # each once, no duplicates
    assert recs[:len(before)] == before  # the old lines kept as they were
    ref = uninterrupted(tmp_path, fast, inp)
    assert {rec["line"]: rec for rec in recs} == ref  # the simulator is deterministic


def test_resume_of_a_complete_file_runs_nothing(tmp_path):
    _, base = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, 5)
    ref = uninterrupted(tmp_path, base, inp)
    out.write_text("".join(json.dumps(ref[i], separators=(",", ":")) + "\n"
                           for i in range(1, 6)))
    before = out.read_bytes()
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(out), "--base-url", base, "--model", "m", "--resume"],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "dspyc run: 0 records" in r.stderr
    assert out.read_bytes() == before


def test_resume_refuses_a_file_that_is_not_run_output(tmp_path):
    _, base = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, 3)
    out.write_text('{"something": "else"}\n')
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(out), "--base-url", base, "--model", "m", "--resume"],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2
    assert "line 1 is not a record of 'dspyc run'" in r.stderr
    assert out.read_text() == '{"something": "else"}\n'  # untouched
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        "-", "--resume"], capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2 and "--resume needs an --output file" in r.stderr


def test_resume_keeps_earlier_failures_in_the_exit_status(tmp_path):
    _, base = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inp, 3)
    out.write_text('{"line":2,"ok":false,"error":{"class":"network","message":"x"}}\n')
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(out), "--base-url", base, "--model", "m", "--resume"],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 1, r.stderr  # line 2 failed, in the earlier run
    assert sorted(rec["line"] for rec in records(out)) == [1, 2, 3]
    assert "(0 ok, 1 failed)" in r.stderr


def test_empty_and_blank_lines_get_an_error_record(tmp_path):
    _, base = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"question": "a"}\n\n   \n\t\r\n{"question": "b"}\n')
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(out), "--base-url", base, "--model", "m"], capture_output=True,
                       text=True, env=env(), timeout=60)
    assert r.returncode == 1, r.stderr
    recs = records(out)
    assert [rec["line"] for rec in recs] == [1, 2, 3, 4, 5]
    for rec in recs[1:4]:
        assert rec["ok"] is False
        assert rec["error"]["class"] == "invalid"
        assert rec["error"]["message"].startswith("empty line")
    assert recs[0]["ok"] and recs[4]["ok"]
    # Demos files (read by the same JSON-lines loader) name the empty line too.
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"question": "q", "answer": "a"}\n\n')
    r = subprocess.run([DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
                        str(out), "--demos", str(demos), "--base-url", base, "--model", "m"],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2
    assert f"{demos}, line 2: empty line" in r.stderr
