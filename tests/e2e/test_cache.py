"""End-to-end tests of the LM cache through the `dspyc` binary: a real redis-server (killed
mid-run), the LMDB disk store across restarts and shared by two processes at once,
single-flight across 100 processes, corrupt entries on disk, no-cache/no-store, the original
usage on hits, configuration precedence, and `dspyc cache stats|clear|export|import`.
The simulator's request log (--record) is the witness of what went upstream."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIG = "question -> answer"
CACHE_ENV = ("DSPYC_CACHE", "DSPYC_CACHE_DIR", "DSPYC_REDIS_URL", "DSPYC_CACHE_TTL",
             "DSPYC_CACHE_NAMESPACE", "DSPYC_CACHE_MEM_SIZE", "DSPYC_CACHE_DISK_SIZE",
             "DSPYC_NO_CACHE", "DSPYC_NO_STORE", "DSPYC_REDIS_TIMEOUT_MS", "DSPYC_CONFIG",
             "DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL")


def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items() if k not in CACHE_ENV}
    e.update(extra or {})
    return e


def dspyc(*args, env=None, timeout=300):
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True,
                          env=clean_env(env), timeout=timeout)


def write_inputs(path, questions):
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
    return path


def run(base, inp, out, *flags, env=None):
    """`dspyc run` of the test signature against the simulator at `base`."""
    return dspyc("run", "--signature", SIG, "--input", inp, "--output", out, "--base-url", base,
                 "--model", "openai/dspyc-sim", *flags, env=env)


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def predictions(path):
    recs = records(path)
    assert all(r["ok"] for r in recs), [r for r in recs if not r["ok"]][:3]
    return [r["prediction"] for r in recs]


def chat_requests(record):
    """How many chat completions the simulator saw."""
    if not record.exists():
        return 0
    return sum(1 for line in record.read_text().splitlines()
               if json.loads(line).get("path", "").endswith("/chat/completions"))


def answered_from_cache(stderr):
    m = re.search(r"cache \(([a-z,]+)\): (\d+) of (\d+) LM calls answered from the cache", stderr)
    assert m, stderr
    return int(m.group(2)), int(m.group(3))


def level_row(stderr, level):
    """The summary's counters for one level: hits, misses, puts, evictions, expired, corrupt,
    errors, skipped."""
    m = re.search(rf"^\s*{level}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)",
                  stderr, re.M)
    assert m, stderr
    keys = ("hits", "misses", "puts", "evictions", "expired", "corrupt", "errors", "skipped")
    return dict(zip(keys, map(int, m.groups())))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, binary):
        # redis-server cannot listen on port 0 and report the port back, so a free port is
        # picked and, should another process take it before Redis binds it (Redis then
        # exits), the start is tried again on another one.
        for _ in range(5):
            if self._start(binary):
                return
        raise RuntimeError("redis-server did not start")

    def _start(self, binary):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.05)
        self.kill()
        return False

    def dbsize(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"DBSIZE\r\n")
            return int(s.recv(64).strip()[1:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def redis():
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    r = Redis(binary)
    yield r
    r.kill()


# ---- (a) Redis killed in the middle of a 1,000-record run --------------------------------

def test_redis_killed_mid_run_loses_nothing(tmp_path, redis):
    questions = [f"What is {i} times {i % 7}?" for i in range(1000)]
    inp = write_inputs(tmp_path / "in.jsonl", questions)
    # Reference answers with no cache at all.
    _, base = start_sim()
    ref = tmp_path / "ref.jsonl"
    r = run(base, inp, ref, "--cache", "off")
    assert r.returncode == 0, r.stderr
    expected = predictions(ref)

    # Fill Redis with every other record, from another process.
    half = write_inputs(tmp_path / "half.jsonl", questions[::2])
    # A generous Redis timeout: on a loaded machine the default 50 ms drops some puts.
    r = run(base, half, tmp_path / "half.out", "--cache", "mem,redis", "--redis-url", redis.url,
            "--redis-timeout-ms", "2000")
    assert r.returncode == 0, r.stderr
    assert redis.dbsize() == 500

    # The real run: each miss takes 3 ms at the simulator; Redis dies early in it.
    rec = tmp_path / "requests.jsonl"
    _, slow = start_sim("--latency-ms", 3, "--record", rec)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output", str(out),
         "--base-url", slow, "--model", "openai/dspyc-sim", "--cache", "mem,redis",
         "--redis-url", redis.url, "--redis-timeout-ms", "2000"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=clean_env())
    # Hold the simulator's answers for a while: the run reads its first records (Redis
    # answers the hits among them) and then waits on its misses, which the simulator parks.
    # Redis dies during that hold, so the rest of the run finds it dead, however fast or slow
    # the machine is (no race between the run's progress and the kill).
    pause = urllib.request.Request(slow.replace("/v1", "/admin/pause?ms=3000"), data=b"",
                                   method="POST")
    urllib.request.urlopen(pause, timeout=10).close()
    deadline = time.time() + 2.5
    while time.time() < deadline and proc.poll() is None:
        with urllib.request.urlopen(slow.replace("/v1", "/admin/stats"), timeout=10) as r:
            if json.load(r)["waiting"] >= 4:
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before Redis could be killed"
    redis.kill()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr

    assert predictions(out) == expected            # every record, correct, no Redis errors
    hits, calls = answered_from_cache(stderr)
    sent = chat_requests(rec)
    assert calls == 1000 and hits + sent == 1000
    assert 0 < hits < 500                           # Redis answered until it died...
    assert sent > 500                               # ...then its records went upstream
    row = level_row(stderr, "redis")
    assert row["hits"] == hits
    assert row["misses"] > 0 and row["errors"] + row["skipped"] > 0
    assert "redis: last error:" in stderr


# ---- (b) a new process finds the answers on disk ------------------------------------------

def test_restart_answers_from_disk(tmp_path):
    inp = write_inputs(tmp_path / "in.jsonl", [f"Name fruit number {i}" for i in range(40)])
    cache = tmp_path / "cache"
    rec1, rec2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    _, base1 = start_sim("--record", rec1)
    r1 = run(base1, inp, tmp_path / "o1.jsonl", "--cache", "mem,disk", "--cache-dir", cache)
    assert r1.returncode == 0, r1.stderr
    assert chat_requests(rec1) == 40
    _, base2 = start_sim("--record", rec2)
    r2 = run(base2, inp, tmp_path / "o2.jsonl", "--cache", "mem,disk", "--cache-dir", cache)
    assert r2.returncode == 0, r2.stderr
    assert chat_requests(rec2) == 0
    assert predictions(tmp_path / "o2.jsonl") == predictions(tmp_path / "o1.jsonl")
    assert answered_from_cache(r2.stderr) == (40, 40)
    assert level_row(r2.stderr, "disk")["hits"] == 40


# ---- (c) two processes share one disk store at once ---------------------------------------

def test_two_processes_share_one_disk_store(tmp_path):
    questions = [f"Spell the number {i}" for i in range(200)]
    fwd = write_inputs(tmp_path / "fwd.jsonl", questions)
    rev = write_inputs(tmp_path / "rev.jsonl", questions[::-1])
    cache = tmp_path / "cache"
    _, base = start_sim("--latency-ms", 2)
    procs = [subprocess.Popen(
        [DSPYC, "run", "--signature", SIG, "--input", str(i), "--output", str(tmp_path / o),
         "--base-url", base, "--model", "openai/dspyc-sim", "--cache", "mem,disk",
         "--cache-dir", str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env()) for i, o in ((fwd, "a.jsonl"), (rev, "b.jsonl"))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    a = predictions(tmp_path / "a.jsonl")
    b = predictions(tmp_path / "b.jsonl")
    assert a == b[::-1]

    rec = tmp_path / "r.jsonl"
    _, base2 = start_sim("--record", rec)
    r = run(base2, fwd, tmp_path / "c.jsonl", "--cache", "disk", "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    assert chat_requests(rec) == 0
    assert predictions(tmp_path / "c.jsonl") == a
    s = dspyc("cache", "stats", "--check", "--json", "--cache-dir", cache)
    assert s.returncode == 0, s.stderr
    l3 = json.loads(s.stdout)["l3"]
    assert l3["entries"] == 200 and l3["readable"] == 200 and l3["unreadable"] == 0


# ---- (d) single-flight: 100 processes, one upstream request -------------------------------

def test_hundred_processes_make_one_request(tmp_path, redis):
    rec = tmp_path / "requests.jsonl"
    _, base = start_sim("--latency-ms", 2500, "--record", rec)
    inp = write_inputs(tmp_path / "in.jsonl", ["What is the airspeed of an unladen swallow?"])
    procs = [subprocess.Popen(
        [DSPYC, "run", "--signature", SIG, "--input", str(inp), "--output",
         str(tmp_path / f"out{i}.jsonl"), "--base-url", base, "--model", "openai/dspyc-sim",
         "--cache", "mem,redis", "--redis-url", redis.url, "--redis-timeout-ms", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
        for i in range(100)]
    waited = 0
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        waited += int(re.search(r"on another process (\d+)", err).group(1))
    outs = [predictions(tmp_path / f"out{i}.jsonl") for i in range(100)]
    assert all(o == outs[0] for o in outs) and "answer" in outs[0][0]
    assert chat_requests(rec) == 1
    assert waited > 0  # processes that missed waited on the leader's Redis lease


# ---- (e) corrupt and truncated disk entries -----------------------------------------------

def corrupt_entries(data_mdb, how_many):
    """Damage `how_many` entries in LMDB's data file: one payload byte flipped (the checksum
    must catch it), or a stored length that no longer matches what follows (truncation).
    LMDB copies pages on write, so a frame may also sit in free pages: every copy of a chosen
    frame (told apart by the simulator's response id) is damaged alike."""
    raw = bytearray(data_mdb.read_bytes())
    frames = {}
    for m in re.finditer(b"DSPC\x01", raw):
        rid = re.match(rb'.{40}\{"id":"(chatcmpl-[0-9a-z]+)"', raw[m.start():m.start() + 200],
                       re.S)
        if rid:  # else not a whole frame (a page cut short): nothing to damage there
            frames.setdefault(rid.group(1), []).append(m.start())
    assert len(frames) >= how_many
    for n, rid in enumerate(sorted(frames)[:how_many]):
        for off in frames[rid]:
            if n % 2 == 0:
                i = raw.index(b"## answer ##", off + 40) + 3   # inside the response text
                raw[i] ^= 0x20                                # 'a' -> 'A'
            else:
                stored = int.from_bytes(raw[off + 8:off + 12], "little")
                raw[off + 8:off + 12] = (stored - 17).to_bytes(4, "little")
    data_mdb.write_bytes(bytes(raw))


def test_corrupt_disk_entries_are_dropped_and_reported(tmp_path):
    inp = write_inputs(tmp_path / "in.jsonl", [f"Which planet is number {i}?" for i in range(12)])
    cache = tmp_path / "cache"
    _, base = start_sim()
    # One writer at a time: corrupt_entries() finds frames by scanning LMDB's pages, and
    # concurrent fills leave stale copies where a scan can run into the next frame.
    r = run(base, inp, tmp_path / "o1.jsonl", "--cache", "disk", "--cache-dir", cache,
            "--concurrency", "1")
    assert r.returncode == 0, r.stderr
    corrupt_entries(cache / "data.mdb", 4)

    s = dspyc("cache", "stats", "--check", "--cache-dir", cache)
    assert s.returncode == 0, s.stderr
    assert "8 disk entries read back cleanly, 4 unreadable" in s.stdout

    rec = tmp_path / "r2.jsonl"
    _, base2 = start_sim("--record", rec)
    r = run(base2, inp, tmp_path / "o2.jsonl", "--cache", "mem,disk", "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    # never returned: the damaged bytes would have changed the answers
    assert predictions(tmp_path / "o2.jsonl") == predictions(tmp_path / "o1.jsonl")
    assert chat_requests(rec) == 4
    disk = level_row(r.stderr, "disk")
    assert disk["corrupt"] == 4 and disk["hits"] == 8
    assert "disk: last error: disk: corrupt entry" in r.stderr

    # replaced by fresh answers: a third run needs nothing upstream
    rec3 = tmp_path / "r3.jsonl"
    _, base3 = start_sim("--record", rec3)
    r = run(base3, inp, tmp_path / "o3.jsonl", "--cache", "disk", "--cache-dir", cache)
    assert r.returncode == 0 and chat_requests(rec3) == 0


# ---- batches look their records up at once ----------------------------------------------

def redis_command(port, *args):
    """One command in RESP; the reply's text (a bulk string's body, else the line)."""
    req = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req.encode())
        data = b""
        while True:
            data += s.recv(65536)
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(head[1:]) + 2:
                    return rest[:int(head[1:])].decode()
            elif data.endswith(b"\r\n"):
                return data.decode().strip()


def command_calls(port):
    """calls per command since the last CONFIG RESETSTAT, from INFO commandstats."""
    info = redis_command(port, "INFO", "commandstats")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", info)}


def chat_questions(record):
    """The question each recorded chat completion asked (its last user message)."""
    out = []
    for line in record.read_text().splitlines():
        body = json.loads(line).get("body")
        if isinstance(body, dict) and "messages" in body:
            m = re.search(r"\[\[ ## question ## \]\]\n(.*?)\n", body["messages"][-1]["content"])
            out.append(m.group(1))
    return out


@pytest.mark.parametrize("levels", ["redis", "mem,redis"])
def test_batch_sends_only_misses_after_one_mget(tmp_path, redis, levels):
    questions = [f"Batch question {i}?" for i in range(40)]
    warm = questions[::2]  # every other record is a hit in the second run
    cache = ("--cache", levels, "--redis-url", redis.url, "--redis-timeout-ms", "2000")
    rec1 = tmp_path / "r1.jsonl"
    _, base = start_sim("--record", rec1)
    r = run(base, write_inputs(tmp_path / "warm.jsonl", warm), tmp_path / "warm.out", *cache)
    assert r.returncode == 0, r.stderr
    first = dict(zip(warm, predictions(tmp_path / "warm.out")))
    assert redis.dbsize() == len(warm)

    redis_command(redis.port, "CONFIG", "RESETSTAT")
    rec2 = tmp_path / "r2.jsonl"
    _, base = start_sim("--record", rec2)
    r = run(base, write_inputs(tmp_path / "all.jsonl", questions), tmp_path / "all.out",
            "--concurrency", "8", *cache)
    assert r.returncode == 0, r.stderr
    # only the misses reached the LM, and the results came back in input order
    assert sorted(chat_questions(rec2)) == sorted(q for q in questions if q not in first)
    preds = predictions(tmp_path / "all.out")
    for q, p in zip(questions, preds):
        if q in first:
            assert p == first[q]
    assert answered_from_cache(r.stderr) == (len(warm), len(questions))
    calls = command_calls(redis.port)
    # the hits came from MGETs (one per run of records read ahead), not one GET each: the
    # GETs left are those inside the lease scripts (EVAL: take the lease, drop it), one per
    # script run; a leader does not look in Redis again before the lease script does
    assert 1 <= calls.get("mget", 0) <= len(questions) // 8, calls
    assert calls.get("get", 0) == calls.get("eval", 0) == 2 * (len(questions) - len(warm)), calls
    if levels == "redis":  # each key counted once in Redis's row: hit or miss
        row = level_row(r.stderr, "redis")
        assert (row["hits"], row["misses"]) == (len(warm), len(questions) - len(warm)), row


RAG_CORPUS = [{"id": f"d{i}", "title": f"Topic {i}",
               "text": f"Topic {i} is about item number {i} and its colour {c}."}
              for i, c in zip(range(60), ["red", "green", "blue", "amber"] * 15)]


def test_rag_batch_with_rerank_and_budget_sends_mgets_and_only_misses(tmp_path, redis):
    """A RAG program whose first predictor follows local steps (BM25, the MiniLM re-rank,
    the context budget) over a Redis-only cache: the steps run for the records read ahead,
    their first LM calls are looked up in MGETs, and only the misses reach the LM. Each
    miss's leader reads Redis once more, inside the lease script only; Redis's row counts
    each key looked up once."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in RAG_CORPUS))
    prog = tmp_path / "rag.json"
    prog.write_text(json.dumps({"name": "rag", "predictors": [
        {"module": "retrieve", "k": 3, "query": "question", "corpus": "corpus.jsonl",
         "rerank": "embed", "depth": 8},
        {"name": "answer", "signature": "passages: list[str], question -> answer"}]}))
    questions = [f"What colour is topic {i}?" for i in range(48)]
    warm = questions[::2]
    cache = ("--cache", "redis", "--redis-url", redis.url, "--redis-timeout-ms", "2000")
    budget = ("--context-budget", "320", "--max-tokens", "100")

    def rag_run(qs, name, *flags):
        rec = tmp_path / f"{name}.rec"
        _, base = start_sim("--record", rec)
        inp = write_inputs(tmp_path / f"{name}.jsonl", qs)
        r = dspyc("run", prog, "--input", inp, "--output", tmp_path / f"{name}.out",
                  "--base-url", base, "--model", "openai/dspyc-sim", *budget, *cache, *flags)
        assert r.returncode == 0, r.stderr
        return r, rec

    _, rec1 = rag_run(warm, "warm")
    assert redis.dbsize() == len(warm)
    first = dict(zip(warm, predictions(tmp_path / "warm.out")))
    assert any("context_dropped" in p for p in first.values())  # the budget did drop

    redis_command(redis.port, "CONFIG", "RESETSTAT")
    r, rec2 = rag_run(questions, "all", "--concurrency", "8")
    misses = [q for q in questions if q not in first]
    assert sorted(chat_questions(rec2)) == sorted(misses)
    for q, p in zip(questions, predictions(tmp_path / "all.out")):
        if q in first:
            assert p == first[q]  # the same passages, drops and answer as the first run
    assert answered_from_cache(r.stderr) == (len(warm), len(questions))
    calls = command_calls(redis.port)
    assert 1 <= calls.get("mget", 0) <= len(questions) // 8, calls
    # no GET per record, and none for a leader's look again: only the lease scripts' (one
    # each: take the lease, drop it)
    assert calls.get("get", 0) == calls.get("eval", 0) == 2 * len(misses), calls
    row = level_row(r.stderr, "redis")
    assert (row["hits"], row["misses"]) == (len(warm), len(misses)), row


def test_batch_with_no_cache_looks_nothing_up(tmp_path, redis):
    inp = write_inputs(tmp_path / "in.jsonl", [f"Uncached {i}?" for i in range(12)])
    cache = ("--cache", "redis", "--redis-url", redis.url, "--redis-timeout-ms", "2000")
    _, base = start_sim()
    assert run(base, inp, tmp_path / "a.out", *cache).returncode == 0
    redis_command(redis.port, "CONFIG", "RESETSTAT")
    rec = tmp_path / "r.jsonl"
    _, base = start_sim("--record", rec)
    r = run(base, inp, tmp_path / "b.out", *cache, "--no-cache")
    assert r.returncode == 0, r.stderr
    assert chat_requests(rec) == 12
    calls = command_calls(redis.port)
    assert "mget" not in calls and "get" not in calls, calls


# ---- (f) no-cache and no-store ------------------------------------------------------------

def test_no_cache_and_no_store(tmp_path):
    inp = write_inputs(tmp_path / "in.jsonl", [f"Colour number {i}?" for i in range(10)])
    cache = tmp_path / "cache"
    flags = ("--cache", "mem,disk", "--cache-dir", cache)

    def requests_of(*more, env=None):
        rec = tmp_path / f"r{time.monotonic_ns()}.jsonl"
        _, base = start_sim("--record", rec)
        r = run(base, inp, tmp_path / "o.jsonl", *flags, *more, env=env)
        assert r.returncode == 0, r.stderr
        return chat_requests(rec)

    assert requests_of("--no-store") == 10
    assert requests_of(env={"DSPYC_NO_STORE": "1"}) == 10
    assert json.loads(dspyc("cache", "stats", "--json", "--cache-dir", cache).stdout)["l3"][
        "entries"] == 0
    assert requests_of() == 10                      # stores
    assert requests_of("--no-cache") == 10          # does not read...
    assert requests_of() == 0                       # ...but still stored
    assert requests_of("--no-cache", "--no-store") == 10
    assert requests_of() == 0


def test_ttl_expires_entries(tmp_path):
    inp = write_inputs(tmp_path / "in.jsonl", ["short-lived one", "short-lived two"])
    flags = ("--cache", "disk", "--cache-dir", tmp_path / "cache", "--cache-ttl", "1")
    _, base = start_sim()
    r = run(base, inp, tmp_path / "o.jsonl", *flags)
    assert answered_from_cache(r.stderr) == (0, 2)
    r = run(base, inp, tmp_path / "o.jsonl", *flags)
    assert answered_from_cache(r.stderr) == (2, 2)
    time.sleep(1.2)
    r = run(base, inp, tmp_path / "o.jsonl", *flags)
    assert answered_from_cache(r.stderr) == (0, 2)
    assert level_row(r.stderr, "disk")["expired"] == 2


# ---- (g) hits report the original usage ---------------------------------------------------

def test_hits_report_original_usage(tmp_path):
    inp = write_inputs(tmp_path / "in.jsonl", [f"Tell me about {c}" for c in "ABCDEFGH"])
    cache = tmp_path / "cache"
    _, base = start_sim()
    usage = re.compile(r"LM calls: (\d+)  tokens: (\d+) prompt, (\d+) completion")
    r1 = run(base, inp, tmp_path / "o1.jsonl", "--cache", "disk", "--cache-dir", cache)
    r2 = run(base, inp, tmp_path / "o2.jsonl", "--cache", "disk", "--cache-dir", cache)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    calls, prompt, completion = map(int, usage.search(r1.stderr).groups())
    assert calls == 8 and prompt > 0 and completion > 0
    assert tuple(map(int, usage.search(r2.stderr).groups())) == (calls, prompt, completion)
    assert f"(of which from the cache: {prompt} prompt, {completion} completion)" in r2.stderr
    assert answered_from_cache(r1.stderr) == (0, 8)
    assert answered_from_cache(r2.stderr) == (8, 8)


# ---- configuration ------------------------------------------------------------------------

def test_flags_beat_environment_beat_config_file(tmp_path):
    inp = write_inputs(tmp_path / "in.jsonl", ["one", "two"])
    file_dir, env_dir, flag_dir = tmp_path / "file", tmp_path / "env", tmp_path / "flag"
    conf = tmp_path / "dspyc.json"
    conf.write_text(json.dumps({"cache": "disk", "cache_dir": str(file_dir),
                                "cache_namespace": "team-a", "cache_disk_size": "64M"}))
    _, base = start_sim()

    def entries(d):
        s = dspyc("cache", "stats", "--json", "--cache-dir", d)
        return json.loads(s.stdout)["l3"]["entries"] if s.returncode == 0 else None

    assert run(base, inp, tmp_path / "o.jsonl", "--cache-config", conf).returncode == 0
    assert entries(file_dir) == 2
    r = run(base, inp, tmp_path / "o.jsonl", env={"DSPYC_CONFIG": str(conf),
                                                  "DSPYC_CACHE_DIR": str(env_dir)})
    assert r.returncode == 0, r.stderr
    assert entries(env_dir) == 2
    r = run(base, inp, tmp_path / "o.jsonl", "--cache-dir", flag_dir,
            env={"DSPYC_CONFIG": str(conf), "DSPYC_CACHE_DIR": str(env_dir)})
    assert r.returncode == 0 and entries(flag_dir) == 2
    # the namespace from the file keeps entries apart from the same requests without it
    r = run(base, inp, tmp_path / "o.jsonl", "--cache", "disk", "--cache-dir", file_dir)
    assert answered_from_cache(r.stderr) == (0, 2)
    r = run(base, inp, tmp_path / "o.jsonl", "--cache-config", conf)
    assert answered_from_cache(r.stderr) == (2, 2)
    # --cache off beats the file
    r = run(base, inp, tmp_path / "o.jsonl", "--cache-config", conf, "--cache", "off")
    assert r.returncode == 0 and "cache (" not in r.stderr


def test_bad_configuration_is_named(tmp_path):
    _, base = start_sim()
    inp = write_inputs(tmp_path / "in.jsonl", ["x"])
    r = run(base, inp, tmp_path / "o.jsonl", "--cache", "mem,floppy")
    assert r.returncode == 2 and "--cache: 'mem,floppy' is not a list of mem, redis, disk" \
        in r.stderr
    r = run(base, inp, tmp_path / "o.jsonl", env={"DSPYC_CACHE_TTL": "soon"})
    assert r.returncode == 2 and "$DSPYC_CACHE_TTL: 'soon'" in r.stderr
    conf = tmp_path / "c.json"
    conf.write_text('{"cache": "disk", "cache_colour": "blue"}')
    r = run(base, inp, tmp_path / "o.jsonl", "--cache-config", conf)
    assert r.returncode == 2 and 'unknown key "cache_colour"' in r.stderr
    conf.write_text('{"cache": ')
    r = run(base, inp, tmp_path / "o.jsonl", "--cache-config", conf)
    assert r.returncode == 2 and str(conf) + ":1:" in r.stderr


def test_default_disk_cache_lives_in_the_users_cache_dir(tmp_path):
    home = tmp_path / "home"
    inp = write_inputs(tmp_path / "in.jsonl", ["hello"])
    _, base = start_sim()
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "o.jsonl",
              "--base-url", base, "--model", "m", env={"HOME": str(home), "XDG_CACHE_HOME": ""})
    assert r.returncode == 0, r.stderr
    assert "cache (mem,disk)" in r.stderr
    assert (home / ".cache" / "dspyc" / "data.mdb").exists()
    # bench measures the LM, not the cache: off unless asked for
    h = dspyc("bench", "--help")
    assert "off for bench" in h.stdout


# ---- dspyc cache ----------------------------------------------------------------------------

def test_cache_command_export_import_clear(tmp_path, redis):
    inp = write_inputs(tmp_path / "in.jsonl", [f"Animal number {i}" for i in range(15)])
    a, b = tmp_path / "a", tmp_path / "b"
    _, base = start_sim()
    assert run(base, inp, tmp_path / "o.jsonl", "--cache", "disk", "--cache-dir", a).returncode \
        == 0
    dump = tmp_path / "dump.jsonl"
    e = dspyc("cache", "export", dump, "--cache-dir", a)
    assert e.returncode == 0, e.stderr
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(lines) == 15 and all(len(x["key"]) == 32 and "choices" in x["text"]
                                    for x in lines)
    i = dspyc("cache", "import", dump, "--cache", "disk,redis", "--cache-dir", b,
              "--redis-url", redis.url)
    assert i.returncode == 0, i.stderr
    assert redis.dbsize() == 15
    rec = tmp_path / "r.jsonl"
    _, base2 = start_sim("--record", rec)
    assert run(base2, inp, tmp_path / "o2.jsonl", "--cache", "redis", "--redis-url",
               redis.url).returncode == 0
    assert run(base2, inp, tmp_path / "o3.jsonl", "--cache", "disk", "--cache-dir",
               b).returncode == 0
    assert chat_requests(rec) == 0

    s = dspyc("cache", "stats", "--cache", "mem,disk,redis", "--cache-dir", b, "--redis-url",
              redis.url)
    assert s.returncode == 0, s.stderr
    assert re.search(r"^disk\s+15\s", s.stdout, re.M) and "(up)" in s.stdout
    assert "mem" not in s.stdout.split("\n", 1)[1]   # this process's memory is not reported
    c = dspyc("cache", "clear", "--cache", "disk,redis", "--cache-dir", b, "--redis-url",
              redis.url)
    assert c.returncode == 0 and "15 disk entries" in c.stdout
    assert redis.dbsize() == 0
    s = dspyc("cache", "stats", "--json", "--cache-dir", b)
    assert json.loads(s.stdout)["l3"]["entries"] == 0
    assert dspyc("cache", "frobnicate").returncode == 2
    assert dspyc("cache", "stats", "--cache", "mem").returncode == 2
