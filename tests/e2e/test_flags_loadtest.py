"""End-to-end tests of the documented flags of `dspyc loadtest` and `dspyc sim`, and of
`bench --python`: each checks the flag's effect in what the simulator recorded (--record), in
the per-request log (--log: each request's intended send time, so schedules are checked
without reading a clock) or in the JSON report."""
import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import DSPYC, ROOT, start_sim

pytestmark = [pytest.mark.e2e]


def loadtest(tmp_path, *args, timeout=120):
    """Run `dspyc loadtest ARGS --json R --log L`; return (rc, report, log records, output)."""
    rep, log = tmp_path / "r.json", tmp_path / "l.jsonl"
    for f in (rep, log):
        if f.exists():
            f.unlink()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    p = subprocess.run([DSPYC, "loadtest", *map(str, args), "--json", rep, "--log", log,
                        "--quiet"], capture_output=True, text=True, timeout=timeout, env=env)
    report = json.loads(rep.read_text()) if rep.exists() else None
    records = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    return p.returncode, report, records, p.stdout + p.stderr


def recorded(record):
    return [json.loads(l) for l in record.read_text().splitlines()] if record.exists() else []


def sim_with_record(tmp_path, *flags):
    record = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", record, *flags)
    return record, base


def in_window(records, lo_ms, hi_ms):
    return sum(1 for r in records if lo_ms <= r["intended_ms"] < hi_ms)


# ---- what is sent ---------------------------------------------------------------------------

def test_count_stops_after_n_requests(tmp_path):
    record, base = sim_with_record(tmp_path)
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--rate", 100, "--duration", 30,
                                 "--count", 7)
    assert rc == 0, out
    assert rep["completed"] == 7 and len(log) == 7
    assert len(recorded(record)) == 7


def test_http_method_header_body(tmp_path):
    record, base = sim_with_record(tmp_path, "--api-key", "sk-load")
    body = '{"model": "dspyc-sim", "messages": [{"role": "user", "content": "{{prompt}} #{{i}}"}]}'
    url = base + "/chat/completions"
    rc, rep, log, out = loadtest(tmp_path, "--http", "--url", url, "--method", "POST",
                                 "--header", "Authorization: Bearer sk-load",
                                 "--header", "X-Test: 1", "--body", body, "--count", 5,
                                 "--rate", 50, "--templates", 3)
    assert rc == 0, out
    assert rep["completed"] == 5 and rep["failed"] == 0  # the header carried the key
    recs = recorded(record)
    assert [r["method"] for r in recs] == ["POST"] * 5
    contents = [r["body"]["messages"][0]["content"] for r in recs]
    assert all("{{" not in c and " #" in c for c in contents)
    # Without the header every request is refused: the header is what made them pass.
    rc, rep, log, out = loadtest(tmp_path, "--http", "--url", url, "--body", body,
                                 "--count", 3, "--rate", 50)
    assert rep["failed"] == 3 and {r["status"] for r in log} == {401}
    # GET with no body: the method reaches the server.
    rc, rep, log, out = loadtest(tmp_path, "--http", "--url", base + "/models", "--method",
                                 "GET", "--header", "Authorization: Bearer sk-load",
                                 "--count", 2, "--rate", 50)
    assert rc == 0, out
    assert [r["method"] for r in recorded(record)[-2:]] == ["GET", "GET"]


def test_body_from_file(tmp_path):
    record, base = sim_with_record(tmp_path)
    tpl = tmp_path / "body.json"
    tpl.write_text('{"model": "m", "messages": [{"role": "user", "content": "file {{i}}"}]}')
    rc, rep, log, out = loadtest(tmp_path, "--http", "--url", base + "/chat/completions",
                                 "--body", f"@{tpl}", "--count", 3, "--rate", 50)
    assert rc == 0, out
    assert all(r["body"]["messages"][0]["content"].startswith("file ")
               for r in recorded(record))


def test_embeddings_target(tmp_path):
    record, base = sim_with_record(tmp_path)
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--embeddings", "--count", 4,
                                 "--rate", 50)
    assert rc == 0, out
    recs = recorded(record)
    assert [r["path"] for r in recs] == ["/v1/embeddings"] * 4
    assert all("input" in r["body"] for r in recs)


def test_prompts_file(tmp_path):
    record, base = sim_with_record(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"zebra question {i}"}) + "\n"
                               for i in range(3)))
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--prompts", prompts, "--count", 6,
                                 "--rate", 50, "--no-stream")
    assert rc == 0, out
    sent = {r["body"]["messages"][-1]["content"] for r in recorded(record)}
    assert sent <= {f"zebra question {i}" for i in range(3)} and sent


# ---- schedules ------------------------------------------------------------------------------

def test_steps_pattern(tmp_path):
    _, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--pattern", "steps", "--steps",
                                 "5,30", "--step-duration", 1, "--arrival", "constant")
    assert rc == 0, out
    assert abs(in_window(log, 0, 1000) - 5) <= 1
    assert abs(in_window(log, 1000, 2000) - 30) <= 1


def test_ramp_pattern(tmp_path):
    _, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--pattern", "ramp", "--rate", 40,
                                 "--ramp-up", 2, "--ramp-down", 0, "--duration", 3,
                                 "--arrival", "constant")
    assert rc == 0, out
    # A linear ramp from 0 to 40/s over 2 s: about 10 in the first second, 30 in the
    # second, then the full 40.
    first, second, third = (in_window(log, a, a + 1000) for a in (0, 1000, 2000))
    assert first < second < third
    assert 5 <= first <= 15 and 25 <= second <= 35 and 36 <= third <= 44


def test_wave_pattern(tmp_path):
    _, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--pattern", "wave", "--rate", 40,
                                 "--wave-period", 2, "--wave-amplitude", 0.8, "--duration", 2,
                                 "--arrival", "constant")
    assert rc == 0, out
    up, down = in_window(log, 0, 1000), in_window(log, 1000, 2000)
    # rate * (1 + 0.8 sin): the first half period carries ~40 * (1 + 0.8 * 2/pi), the second
    # ~40 * (1 - 0.8 * 2/pi).
    assert up > 2 * down
    assert 50 <= up <= 70 and 10 <= down <= 30


def test_warmup_leaves_early_requests_out_of_the_report(tmp_path):
    _, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--rate", 20, "--duration", 2,
                                 "--arrival", "constant", "--warmup", 1)
    assert rc == 0, out
    assert len(log) >= 38  # the log keeps everything
    assert rep["completed"] == in_window(log, 1000, 10 ** 9)
    assert rep["completed"] < len(log) - 10


def test_think_time_spaces_a_users_requests(tmp_path):
    _, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--users", 1, "--think", 0.25,
                                 "--duration", 1.5, "--no-stream")
    assert rc == 0, out
    starts = sorted(r["intended_ms"] for r in log)
    assert 3 <= len(starts) <= 7
    assert all(b - a >= 250 for a, b in zip(starts, starts[1:]))
    # Without --think the one user sends far more in the same time.
    rc, rep2, log2, out = loadtest(tmp_path, "--url", base, "--users", 1, "--duration", 1.5,
                                   "--no-stream")
    assert len(log2) > 5 * len(log)


def test_threads_and_pid(tmp_path):
    proc, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--rate", 20, "--duration", 1.5,
                                 "--threads", 2, "--pid", proc.pid)
    assert rc == 0, out
    assert rep["generator"]["threads"] == 2
    assert rep["target_pid"] == proc.pid
    assert rep["resources"] and all(s["target_rss_mb"] > 0 for s in rep["resources"])
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--rate", 20, "--duration", 0.5)
    assert rep["generator"]["threads"] == 1 and rep.get("target_pid") is None


# ---- simulator flags ------------------------------------------------------------------------

def post(base, path, body, timeout=30):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_embed_dim(tmp_path):
    _, base = start_sim("--embed-dim", 16)
    status, r = post(base, "/embeddings", {"model": "m", "input": ["a cat", "a dog"]})
    assert status == 200
    assert [len(d["embedding"]) for d in r["data"]] == [16, 16]
    _, base = start_sim()
    status, r = post(base, "/embeddings", {"model": "m", "input": "a cat"})
    assert len(r["data"][0]["embedding"]) == 384  # the default


@pytest.mark.parametrize("code", [429, 503])
def test_queue_full_status(code):
    _, base = start_sim("--capacity", 1, "--max-queue", 1, "--latency-ms", 1500,
                        "--queue-full-status", code)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        statuses = list(ex.map(lambda _: post(base, "/chat/completions", body)[0], range(6)))
    assert statuses.count(200) == 2  # one served, one queued
    assert statuses.count(code) == 4


# ---- bench --python -------------------------------------------------------------------------

PROGRAM = """\
import os
import dspy

lm = dspy.LM("openai/dspyc-sim", api_base=os.environ["DSPYC_BASE_URL"], api_key="sim",
             cache=False)
dspy.configure(lm=lm)
qa = dspy.Predict("question -> answer")
"""


def python_env(tmp_path, **extra):
    """The environment for `bench --python` with modules in tmp_path and this venv."""
    venv = sys.prefix if sys.prefix != sys.base_prefix else os.path.join(ROOT, ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("DSPYC_CACHE",)}
    env.update(PYTHONPATH=str(tmp_path), VIRTUAL_ENV=venv, LITELLM_LOCAL_MODEL_COST_MAP="True",
               ASAN_OPTIONS="detect_leaks=0", **extra)
    return env


def test_bench_python_calls_the_python_module(tmp_path):
    pytest.importorskip("dspy")  # counted as a failure by `make test` (strict_skips)
    (tmp_path / "bench_prog.py").write_text(PROGRAM)
    record, base = sim_with_record(tmp_path)
    env = python_env(tmp_path, DSPYC_BASE_URL=base)
    report = tmp_path / "b.json"
    args = ["bench", "--base-url", base, "--model", "openai/dspyc-sim", "--modules",
            "predict", "--iterations", 3, "--warmup", 0, "--concurrency", 1, "--python",
            "bench_prog:qa", "--python-threads", 2, "--json", report]
    r = subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(report.read_text())
    text = json.dumps(rep)
    assert "contended_gil_wait_ms" in text
    # The Python module's requests reached the simulator too: more than the C calls alone.
    chats = [x for x in recorded(record) if x["path"].endswith("/chat/completions")]
    assert len(chats) > 3


LEAK_PROGRAM = """\
import json
import os
import dspy

path = os.environ.get("DSPYC_BENCH_BASE_URL_FILE")
url = open(path).read().strip() if path else os.environ["DSPYC_BENCH_BASE_URL"]
with open(os.environ["ENV_DUMP"], "w") as f:
    json.dump({"environ": dict(os.environ), "has_file": bool(path),
               "file_private": bool(path) and (os.stat(path).st_mode & 0o077) == 0,
               "user_in_url": "benchuser:" in url}, f)
lm = dspy.LM("openai/dspyc-sim", api_base=url, api_key="sim", cache=False)
dspy.configure(lm=lm)
qa = dspy.Predict("question -> answer")
"""


def test_bench_python_never_puts_url_credentials_in_the_environment(tmp_path):
    pytest.importorskip("dspy")  # counted as a failure by `make test` (strict_skips)
    (tmp_path / "leak_prog.py").write_text(LEAK_PROGRAM)
    record, base = sim_with_record(tmp_path)
    secret = "pw-Never-Shown-42"
    cred_base = base.replace("http://", f"http://benchuser:{secret}@")
    dump = tmp_path / "env.json"
    env = python_env(tmp_path, ENV_DUMP=str(dump), TMPDIR=str(tmp_path))
    args = ["bench", "--base-url", cred_base, "--model", "openai/dspyc-sim", "--modules",
            "predict", "--iterations", 2, "--warmup", 0, "--concurrency", 1, "--python",
            "leak_prog:qa", "--python-threads", 1, "--json", tmp_path / "b.json"]
    r = subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    seen = json.loads(dump.read_text())
    # The module got the whole URL through the private file, never through the environment.
    assert seen["has_file"] and seen["file_private"] and seen["user_in_url"]
    assert secret not in json.dumps(seen["environ"])
    assert "benchuser:***@" in seen["environ"]["DSPYC_BENCH_BASE_URL"]
    assert secret not in r.stdout + r.stderr + (tmp_path / "b.json").read_text()
    # The file is gone once the run ends, and the module's calls reached the simulator.
    assert not list(tmp_path.glob("dspyc-bench-url-*"))
    chats = [x for x in recorded(record) if x["path"].endswith("/chat/completions")]
    assert len(chats) > 2


# ---- more loadtest flags --------------------------------------------------------------------

def gaps(log):
    t = sorted(r["intended_ms"] for r in log)
    return [b - a for a, b in zip(t, t[1:])]


def cv(xs):
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5 / m


def test_gamma_burstiness_shapes_the_arrivals(tmp_path):
    _, base = start_sim()
    common = ["--url", base, "--rate", 200, "--count", 300, "--duration", 10]
    rc, rep, bursty, out = loadtest(tmp_path, *common, "--arrival", "gamma", "--burstiness",
                                    0.25)
    assert rc == 0, out
    assert rep["arrival"] == "gamma" and rep["burstiness"] == 0.25
    rc, rep, smooth, out = loadtest(tmp_path, *common, "--arrival", "gamma", "--burstiness", 4)
    assert rc == 0, out
    # Gamma gaps of shape k have a coefficient of variation 1/sqrt(k): 2 and 0.5.
    assert cv(gaps(bursty)) > 1.4 and cv(gaps(smooth)) < 0.7


def test_chat_target_and_input_words(tmp_path):
    record, base = sim_with_record(tmp_path)
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--chat", "--input-words", "40:0",
                                 "--count", 4, "--rate", 50, "--no-stream")
    assert rc == 0, out
    recs = recorded(record)
    assert [r["path"] for r in recs] == ["/v1/chat/completions"] * 4
    words = [len(r["body"]["messages"][-1]["content"].split()) for r in recs]
    assert all(35 <= w <= 45 for w in words), words
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--input-words", "5:0", "--count", 2,
                                 "--rate", 50, "--no-stream")
    words = [len(r["body"]["messages"][-1]["content"].split()) for r in recorded(record)[4:]]
    assert all(w <= 8 for w in words), words


def test_connections_caps_the_connections_opened(tmp_path):
    _, base = start_sim("--latency-ms", 50)
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--rate", 100, "--duration", 1,
                                 "--arrival", "constant", "--connections", 2)
    assert rc == 0, out
    assert rep["generator"]["connections_opened"] <= 2
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--rate", 100, "--duration", 1,
                                 "--arrival", "constant")
    assert rep["generator"]["connections_opened"] >= 4  # 100/s x 50 ms: ~5 at once


def test_p95_limit_sets_the_latency_rule(tmp_path):
    _, base = start_sim("--latency-ms", 30)
    common = ["--url", base, "--rate", 30, "--duration", 1, "--no-stream"]
    rc, rep, log, out = loadtest(tmp_path, *common, "--p95-limit", 10)
    rules = {f["rule"]: f for f in rep["analysis"]}
    assert "p95_latency" in rules and "10 ms" in rules["p95_latency"]["reason"]
    rc, rep, log, out = loadtest(tmp_path, *common, "--p95-limit", 5000)
    assert "p95_latency" not in {f["rule"] for f in rep["analysis"]}


def test_think_exp_draws_the_pause(tmp_path):
    _, base = start_sim()
    rc, rep, log, out = loadtest(tmp_path, "--url", base, "--users", 1, "--think", 0.2,
                                 "--think-exp", "--duration", 3, "--no-stream")
    assert rc == 0, out
    g = gaps(log)
    assert len(g) >= 5
    # Exponential pauses of mean 200 ms: some far shorter, and not all alike (a fixed
    # --think gives gaps of 200 ms and more, all nearly equal).
    assert min(g) < 150 and max(g) - min(g) > 100


def test_sim_max_body():
    _, base = start_sim("--max-body", 2000)
    small = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert post(base, "/chat/completions", small)[0] == 200
    assert post(base, "/chat/completions", big)[0] == 413
    _, base = start_sim()
    assert post(base, "/chat/completions", big)[0] == 200
