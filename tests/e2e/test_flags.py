"""End-to-end tests of the documented flags of `dspyc predict`, `run`, `bench` and `cache`:
each test checks what the flag changes where a user would see it -- the request the simulator
recorded (--record), the output file, the report -- not only the exit status."""
import json
import os
import subprocess
import time

import pytest

from conftest import DSPYC, ROOT, start_sim

pytestmark = [pytest.mark.e2e]

SIG = "question -> answer"
SCRUB = ("DSPYC_CACHE", "DSPYC_CACHE_DIR", "DSPYC_REDIS_URL", "DSPYC_CACHE_TTL",
         "DSPYC_CACHE_NAMESPACE", "DSPYC_CACHE_MEM_SIZE", "DSPYC_CACHE_DISK_SIZE",
         "DSPYC_NO_CACHE", "DSPYC_NO_STORE", "DSPYC_REDIS_TIMEOUT_MS", "DSPYC_CONFIG",
         "DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL", "OPENAI_API_KEY")


def dspyc(*args, env=None, input=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if k not in SCRUB}
    e["DSPYC_CACHE"] = "off"
    e.update(env or {})
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=e,
                          input=input, timeout=timeout)


_marks = {}


def chat_bodies(record):
    """The bodies of the chat requests the simulator recorded, in arrival order, since the
    last mark(record)."""
    if not record.exists():
        return []
    recs = [json.loads(line) for line in record.read_text().splitlines()]
    bodies = [r["body"] for r in recs if r["path"].endswith("/chat/completions")]
    return bodies[_marks.get(str(record), 0):]


def mark(record):
    """Later chat_bodies(record) calls see only requests recorded from now on (the simulator
    keeps the file open: it cannot be truncated under it)."""
    _marks[str(record)] = _marks.get(str(record), 0) + len(chat_bodies(record))


def recorded_sim(tmp_path, *flags):
    record = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", record, *flags)
    return record, ["--base-url", base, "--model", "openai/dspyc-sim"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def system_text(body):
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


def all_text(body):
    return "\n".join(m["content"] for m in body["messages"] if isinstance(m["content"], str))


# ---- sampling settings ----------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["predict", "run"])
def test_temperature_and_max_tokens_are_sent(tmp_path, cmd):
    record, ep = recorded_sim(tmp_path)
    flags = [*ep, "--temperature", "0.7", "--max-tokens", "55"]
    if cmd == "predict":
        r = dspyc("predict", *flags, SIG, "question=Capital of Peru?")
    else:
        inp = write_jsonl(tmp_path / "in.jsonl", [{"question": "Capital of Peru?"}])
        r = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "o.jsonl",
                  *flags)
    assert r.returncode == 0, r.stderr
    (body,) = chat_bodies(record)
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 55
    # Without the flags neither is sent.
    mark(record)
    r = dspyc("predict", *ep, SIG, "question=Capital of Peru?")
    assert r.returncode == 0, r.stderr
    (body,) = chat_bodies(record)
    assert "temperature" not in body and "max_tokens" not in body


# ---- retries, timeouts ----------------------------------------------------------------------

@pytest.mark.parametrize("retries", [0, 2])
def test_max_retries_is_the_number_of_extra_attempts(tmp_path, retries):
    record, ep = recorded_sim(tmp_path, "--fail-500", "1.0")
    r = dspyc("predict", *ep, "--max-retries", retries, SIG, "question=q")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"]["http_status"] == 500
    assert len(chat_bodies(record)) == retries + 1


def test_timeout_ends_a_slow_call(tmp_path):
    record, ep = recorded_sim(tmp_path, "--latency-ms", 20000)
    t0 = time.monotonic()
    r = dspyc("predict", *ep, "--timeout", "0.5", "--max-retries", 0, SIG, "question=q")
    elapsed = time.monotonic() - t0
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["class"] == "timeout", err
    assert elapsed < 15  # far below the simulator's 20 s: the flag, not the server, ended it
    assert len(chat_bodies(record)) == 1


# ---- API keys -------------------------------------------------------------------------------

def test_api_key_env_and_file(tmp_path):
    _, base = start_sim("--api-key", "sk-right-key")
    ep = ["--base-url", base, "--model", "openai/dspyc-sim"]
    ok = dspyc("predict", *ep, "--api-key-env", "MY_KEY", SIG, "question=q",
               env={"MY_KEY": "sk-right-key", "OPENAI_API_KEY": "sk-wrong"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "answer" in json.loads(ok.stdout)
    # The default variable holds a wrong key: without the flag the call is refused.
    bad = dspyc("predict", *ep, SIG, "question=q", env={"OPENAI_API_KEY": "sk-wrong"})
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["http_status"] == 401
    keyfile = tmp_path / "key.txt"
    keyfile.write_text("sk-right-key\nsecond line ignored\n")
    ok = dspyc("predict", *ep, "--api-key-file", keyfile, SIG, "question=q")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    keyfile.write_text("sk-wrong\n")
    bad = dspyc("predict", *ep, "--api-key-file", keyfile, SIG, "question=q")
    assert bad.returncode == 1
    for r in (ok, bad):  # the key never appears in what dspyc prints
        assert "sk-right-key" not in r.stdout + r.stderr


def test_explicit_key_flags_win_over_the_ambient_variable(tmp_path):
    _, base = start_sim("--api-key", "sk-right-key")
    ep = ["--base-url", base, "--model", "openai/dspyc-sim"]
    keyfile = tmp_path / "key.txt"
    keyfile.write_text("sk-right-key\n")
    ambient = {"OPENAI_API_KEY": "sk-wrong-ambient"}
    # --api-key-file beats a wrong $OPENAI_API_KEY ...
    ok = dspyc("predict", *ep, "--api-key-file", keyfile, SIG, "question=q", env=ambient)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # ... and so does --api-key-env, also beside a file holding a wrong key.
    keyfile.write_text("sk-wrong-file\n")
    ok = dspyc("predict", *ep, "--api-key-env", "MY_KEY", "--api-key-file", keyfile, SIG,
               "question=q", env={**ambient, "MY_KEY": "sk-right-key"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # With the named variable unset, the named file is read (here its wrong key is refused).
    bad = dspyc("predict", *ep, "--api-key-env", "MY_KEY", "--api-key-file", keyfile, SIG,
                "question=q", env=ambient)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["http_status"] == 401
    for r in (ok, bad):
        assert "sk-right-key" not in r.stdout + r.stderr


# ---- run: input, output, state ---------------------------------------------------------------

def test_run_max_line_bytes_reports_the_long_line(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"question": "x" * 300}, {"question": "short"}])
    out = tmp_path / "out.jsonl"
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out,
              "--max-line-bytes", 100)
    assert r.returncode == 1, r.stderr
    first, second = read_jsonl(out)
    assert first["line"] == 1 and not first["ok"]
    assert first["error"]["class"] == "too_big" and "100 bytes" in first["error"]["message"]
    assert second["line"] == 2 and second["ok"]
    # With the default limit the same line is accepted.
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out)
    assert r.returncode == 0, r.stderr
    assert [rec["ok"] for rec in read_jsonl(out)] == [True, True]


def test_run_max_errors_writes_the_cancelled_records(tmp_path):
    # Lines 1-3 wait on a slow LM while line 4, not JSON, fails at once: the run stops, and
    # the three records already read are still written, as cancelled.
    record, ep = recorded_sim(tmp_path, "--latency-ms", 20000)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(1, 4)) +
                   "{not json\n" +
                   "".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(5, 60)))
    out = tmp_path / "out.jsonl"
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out, *ep,
              "--max-errors", 1, "--concurrency", 4, timeout=60)
    assert r.returncode == 1
    assert "--max-errors reached" in r.stderr and "after 4 records" in r.stderr
    recs = read_jsonl(out)
    assert [rec["line"] for rec in recs] == [1, 2, 3, 4]
    assert [rec["error"]["class"] for rec in recs] == ["canceled"] * 3 + ["parse"]
    assert len(chat_bodies(record)) <= 3  # cancelled before or after they were sent


def test_run_quiet_prints_no_summary(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"question": "q"}])
    loud = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "a.jsonl")
    assert loud.returncode == 0 and "1 records, 1 ok" in loud.stderr
    for q in ("-q", "--quiet"):
        quiet = dspyc("run", "--signature", SIG, "--input", inp, "--output",
                      tmp_path / "b.jsonl", q)
        assert quiet.returncode == 0
        assert quiet.stderr == ""
        assert read_jsonl(tmp_path / "b.jsonl")[0]["ok"]


def test_run_instructions_and_save_state_and_state(tmp_path):
    record, ep = recorded_sim(tmp_path)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"question": "Capital of Peru?"}])
    saved = tmp_path / "saved.json"
    r = dspyc("run", "--signature", SIG, "--instructions", "Answer in French.", "--input", inp,
              "--output", tmp_path / "o1.jsonl", "--save-state", saved, *ep)
    assert r.returncode == 0, r.stderr
    (body,) = chat_bodies(record)
    assert "Answer in French." in system_text(body)
    state = json.loads(saved.read_text())
    assert state["signature"]["instructions"] == "Answer in French."
    assert state["demos"] == []

    # A DSPy save file with other instructions and a demo changes the prompt of a plain run.
    state["signature"]["instructions"] = "Reply with one word."
    state["demos"] = [{"question": "Capital of Chile?", "answer": "Santiago"}]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(state))
    mark(record)
    r = dspyc("run", "--signature", SIG, "--state", edited, "--input", inp, "--output",
              tmp_path / "o2.jsonl", *ep)
    assert r.returncode == 0, r.stderr
    (body,) = chat_bodies(record)
    assert "Reply with one word." in system_text(body)
    assert "Capital of Chile?" in all_text(body) and "Santiago" in all_text(body)
    # Without --state neither is there.
    mark(record)
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "o3.jsonl",
              *ep)
    assert r.returncode == 0, r.stderr
    (body,) = chat_bodies(record)
    assert "Reply with one word." not in all_text(body) and "Santiago" not in all_text(body)


def em_normalize(s):
    import re
    import string
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def test_run_score_exact_match(tmp_path):
    task = dspyc("sim", "gen-task", "arith", "--n", 20, "--seed", 3)
    assert task.returncode == 0, task.stderr
    inp = tmp_path / "in.jsonl"
    inp.write_text(task.stdout)
    rows = read_jsonl(inp)
    assert "answer" in rows[0]
    out = tmp_path / "out.jsonl"
    r = dspyc("run", "--signature", "question -> answer", "--input", inp, "--output", out,
              "--score", "answer")
    assert r.returncode == 0, r.stderr
    recs = read_jsonl(out)
    for row, rec in zip(rows, recs):
        want = float(em_normalize(rec["prediction"]["answer"]) == em_normalize(row["answer"]))
        assert rec["score"] == want, (row, rec)
    mean = sum(rec["score"] for rec in recs) / len(recs)
    assert 0 < mean < 1  # the simulator answers arith questions right only sometimes
    total = sum(rec["score"] for rec in recs)
    assert f"{total:.2f} / {len(recs)} ({100 * mean:.1f} %)" in r.stderr
    # f1 scores too, in [0, 1], at least as high as exact match.
    r = dspyc("run", "--signature", "question -> answer", "--input", inp, "--output", out,
              "--score", "answer:f1")
    assert r.returncode == 0, r.stderr
    f1 = [rec["score"] for rec in read_jsonl(out)]
    assert all(0 <= s <= 1 for s in f1) and all(a >= b for a, b in zip(f1, [x["score"] for x in recs]))


# ---- adapters -------------------------------------------------------------------------------

def assert_json_adapter(body):
    assert body["response_format"] == {"type": "json_object"}
    assert "Outputs will be a JSON object" in system_text(body)


def test_adapter_json_predict_run_bench(tmp_path):
    record, ep = recorded_sim(tmp_path)
    r = dspyc("predict", *ep, "--adapter", "json", SIG, "question=Capital of Peru?")
    assert r.returncode == 0, r.stderr
    assert "answer" in json.loads(r.stdout)
    (body,) = chat_bodies(record)
    assert_json_adapter(body)

    mark(record)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"question": "a?"}, {"question": "b?"}])
    r = dspyc("run", "--signature", SIG, "--adapter", "json", "--input", inp, "--output",
              tmp_path / "o.jsonl", *ep)
    assert r.returncode == 0, r.stderr
    bodies = chat_bodies(record)
    assert len(bodies) == 2
    for b in bodies:
        assert_json_adapter(b)

    mark(record)
    r = dspyc("bench", *ep, "--adapter", "json", "--modules", "predict", "--iterations", 3,
              "--warmup", 0, "--concurrency", 1, "--json", tmp_path / "b.json")
    assert r.returncode == 0, r.stderr
    bodies = chat_bodies(record)
    assert bodies and all(b.get("response_format") == {"type": "json_object"} for b in bodies)
    # The default adapter is chat: no response_format.
    mark(record)
    r = dspyc("predict", *ep, SIG, "question=Capital of Peru?")
    (body,) = chat_bodies(record)
    assert "response_format" not in body


def schema_of(body):
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["name"] == "DSPyProgramOutputs"
    return rf["json_schema"]["schema"]


def test_structured_outputs_follow_the_model_and_the_flag(tmp_path):
    record, ep = recorded_sim(tmp_path)
    base = ep[1]
    sig = "question -> answer, n: int"

    def sent(model, *flags, adapter="json", signature=sig):
        mark(record)
        r = dspyc("predict", "--base-url", base, "--model", model, "--adapter", adapter,
                  *flags, signature, "question=q")
        assert r.returncode in (0, 1), r.stderr
        bodies = chat_bodies(record)
        assert bodies, r.stderr
        return bodies[0]

    # auto: a model litellm says supports response schemas gets one; an unknown model
    # (the simulator's name) gets JSON mode.
    schema = schema_of(sent("openai/gpt-4o-mini"))
    assert list(schema["properties"]) == ["answer", "n"]
    assert schema["required"] == ["answer", "n"] and schema["additionalProperties"] is False
    assert schema["properties"]["n"] == {"title": "N", "type": "integer"}
    assert sent("openai/dspyc-sim")["response_format"] == {"type": "json_object"}
    assert sent("gpt-4o-2024-05-13")["response_format"] == {"type": "json_object"}
    # on / off override the table either way.
    schema_of(sent("openai/dspyc-sim", "--structured-outputs", "on"))
    off = sent("openai/gpt-4o-mini", "--structured-outputs", "off")
    assert off["response_format"] == {"type": "json_object"}
    assert schema_of(sent("openai/gpt-4o-mini", "--structured-outputs", "auto"))
    # The Chat adapter sends none; an open-ended dict output field keeps JSON mode.
    assert "response_format" not in sent("openai/gpt-4o-mini", "--structured-outputs", "on",
                                         adapter="chat")
    d = sent("openai/gpt-4o-mini", "--structured-outputs", "on",
             signature="question -> answer: dict[str, int]")
    assert d["response_format"] == {"type": "json_object"}
    bad = dspyc("predict", *ep, "--structured-outputs", "maybe", SIG, "question=q")
    assert bad.returncode == 2 and "--structured-outputs" in bad.stderr


# ---- predict --------------------------------------------------------------------------------

def test_predict_rollout_id_changes_only_the_cache_key(tmp_path):
    record, ep = recorded_sim(tmp_path)
    cache = ["--cache", "disk", "--cache-dir", tmp_path / "cache"]
    for _ in range(2):
        r = dspyc("predict", *ep, *cache, SIG, "question=q")
        assert r.returncode == 0, r.stderr
    assert len(chat_bodies(record)) == 1  # the second was a hit
    r = dspyc("predict", *ep, *cache, "--rollout-id", 1, SIG, "question=q")
    assert r.returncode == 0, r.stderr
    bodies = chat_bodies(record)
    assert len(bodies) == 2  # another key: a miss
    assert bodies[0] == bodies[1]  # the same request: rollout_id is not sent
    r = dspyc("predict", *ep, *cache, "--rollout-id", 1, SIG, "question=q")
    assert len(chat_bodies(record)) == 2  # and it has its own entry


def test_predict_stream_prints_deltas_as_they_arrive(tmp_path):
    # 100 ms a token: the answer takes seconds to arrive in full. The first delta must
    # be read while the stream is still going, not together with the rest at the end.
    _, base = start_sim("--tpot-ms", 100, "--reply-tokens", 40)
    e = {k: v for k, v in os.environ.items() if k not in SCRUB}
    e["DSPYC_CACHE"] = "off"
    p = subprocess.Popen([DSPYC, "predict", "--base-url", base, "--model", "openai/dspyc-sim",
                          "--stream", SIG, "question=Describe Paris at length."],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        first = os.read(p.stderr.fileno(), 65536)
        running_after_first = p.poll() is None
        rest = p.stderr.read()
        out = p.stdout.read()
        assert p.wait(60) == 0, (first + rest).decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = (first + rest).decode()
    assert "[[ ## completed ## ]]" in text
    assert b"[[ ## completed ## ]]" not in first  # the first read is not the whole answer
    assert running_after_first
    assert json.loads(out)["answer"]


# ---- cache flags ----------------------------------------------------------------------------

def test_cache_namespace_keeps_entries_apart(tmp_path):
    record, ep = recorded_sim(tmp_path)
    cache = ["--cache", "disk", "--cache-dir", tmp_path / "cache"]
    for ns, calls in (("alpha", 1), ("beta", 2), ("alpha", 2), ("beta", 2)):
        r = dspyc("predict", *ep, *cache, "--cache-namespace", ns, SIG, "question=q")
        assert r.returncode == 0, r.stderr
        assert len(chat_bodies(record)) == calls, ns
    r = dspyc("predict", *ep, *cache, SIG, "question=q")  # no namespace: a third key
    assert len(chat_bodies(record)) <= 3  # cancelled before or after they were sent


def test_cache_mem_size_bounds_the_memory_level(tmp_path):
    record, ep = recorded_sim(tmp_path)
    rows = [{"question": f"Question number {i} about something?"} for i in range(30)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows + rows)
    out = tmp_path / "o.jsonl"
    common = ["run", "--signature", SIG, "--input", inp, "--output", out, "--concurrency", 1,
              "--cache", "mem", *ep]
    r = dspyc(*common)
    assert r.returncode == 0, r.stderr
    assert len(chat_bodies(record)) == 30  # the second pass hits the memory level
    mark(record)
    r = dspyc(*common, "--cache-mem-size", "2K")
    assert r.returncode == 0, r.stderr
    assert len(chat_bodies(record)) > 45  # 2 KiB holds a few entries at most


def test_cache_disk_size_evicts_the_oldest(tmp_path):
    _, ep = recorded_sim(tmp_path)
    cache = ["--cache", "disk", "--cache-dir", tmp_path / "cache"]
    inp = write_jsonl(tmp_path / "in.jsonl",
                      [{"question": f"Question number {i} about something?"} for i in range(40)])
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "o.jsonl",
              "--concurrency", 1, *cache, "--cache-disk-size", "8K", *ep)
    assert r.returncode == 0, r.stderr
    stats = json.loads(dspyc("cache", "stats", "--json", *cache).stdout)["l3"]
    assert 0 < stats["entries"] < 40
    assert stats["bytes"] <= 8 * 1024
    big = tmp_path / "cache2"
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "o.jsonl",
              "--concurrency", 1, "--cache", "disk", "--cache-dir", big, *ep)
    stats = json.loads(dspyc("cache", "stats", "--json", "--cache", "disk", "--cache-dir",
                             big).stdout)["l3"]
    assert stats["entries"] == 40


def test_cache_level_selects_the_level(tmp_path):
    _, ep = recorded_sim(tmp_path)
    cache = ["--cache", "disk", "--cache-dir", tmp_path / "cache"]
    r = dspyc("predict", *ep, *cache, SIG, "question=q")
    assert r.returncode == 0, r.stderr
    exp = dspyc("cache", "export", "-", "--level", "disk", *cache)
    assert exp.returncode == 0, exp.stderr
    lines = exp.stdout.splitlines()
    assert len(lines) == 1 and len(json.loads(lines[0])["key"]) == 32
    # A level that is not open is an error naming it.
    bad = dspyc("cache", "export", "-", "--level", "redis", *cache)
    assert bad.returncode == 2 and "--level" in bad.stderr and "not open" in bad.stderr
    clr = dspyc("cache", "clear", "--level", "disk", *cache)
    assert clr.returncode == 0, clr.stderr
    stats = json.loads(dspyc("cache", "stats", "--json", *cache).stdout)
    assert stats["l3"]["entries"] == 0


# ---- bench ----------------------------------------------------------------------------------

def test_bench_program_runs_the_program(tmp_path):
    record, ep = recorded_sim(tmp_path)
    program = os.path.join(ROOT, "examples", "arith", "program.json")
    report = tmp_path / "b.json"
    r = dspyc("bench", *ep, "--program", program, "--iterations", 3, "--warmup", 0,
              "--concurrency", 1, "--json", report)
    assert r.returncode == 0, r.stderr
    spec = json.load(open(program))
    bodies = chat_bodies(record)
    assert bodies
    # The program's own signature is what was sent, not the default 'question -> answer'.
    text = json.dumps(spec)
    sent = system_text(bodies[0])
    fields = [w for w in ("reasoning", "answer", "question") if w in text]
    assert any(f"`{f}`" in sent for f in fields)
    subjects = json.load(open(report))["subjects"]
    assert [s["name"] for s in subjects] == [program]  # one subject: the program
