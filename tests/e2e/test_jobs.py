"""End-to-end tests of the optimization service: `dspyc serve --jobs` (local worker threads
and the SQLite store, or Redis Streams with `dspyc worker` processes), its HTTP API and the
`dspyc jobs` client, with a real redis-server and the simulator as the LM. The simulator's
request log (--record) is the witness of the shared rate limit; the store's result rows and
the job states are the witness of "every job ends once"."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import http.client
import urllib.parse

import pytest

from e2e.conftest import DSPYC, ROOT, start_server, start_sim, stop_sim

pytestmark = pytest.mark.e2e

TRAIN = [json.loads(l) for l in open(os.path.join(ROOT, "examples", "arith", "train.jsonl"))]
TERMINAL = {"succeeded", "failed", "cancelled", "dead"}


def small_opt(i=0, **kw):
    """A small real optimization: bootstrap on four examples (the cache makes repeats
    cheap)."""
    spec = {"kind": "optimize", "signature": "question -> answer", "optimizer": "bootstrap",
            "trainset": TRAIN[:4], "metric": "exact_match:answer", "seed": i % 4,
            "max_bootstrapped_demos": 2, "concurrency": 4}
    spec.update(kw)
    return spec


class Api:
    def __init__(self, base, token=None):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.conn = None

    def call(self, method, path, body=None):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                hdr = {"Content-Type": "application/json"}
                if self.token:
                    hdr["Authorization"] = f"Bearer {self.token}"
                data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
                self.conn.request(method, path, body=data, headers=hdr)
                r = self.conn.getresponse()
                text = r.read().decode()
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = text
                return r.status, doc, dict(r.getheaders())
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.1)

    def submit(self, spec):
        st, doc, _ = self.call("POST", "/v1/jobs", spec)
        assert st == 202, doc
        return doc["id"]

    def job(self, jid):
        st, doc, _ = self.call("GET", f"/v1/jobs/{jid}")
        assert st == 200, doc
        return doc

    def queue(self):
        return self.call("GET", "/v1/queue")[1]

    def stored_results(self, n, timeout=10):
        """stored_results once it reaches n (a result is committed within the store's group
        commit of its job's end) or the time is up: a missing result never gets there."""
        deadline = time.time() + timeout
        while True:
            got = self.queue()["stored_results"]
            if got == n or time.time() > deadline:
                return got
            time.sleep(0.02)

    def wait_all(self, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            q = self.queue()
            if sum(q["ended"].values()) >= n:
                return q
            time.sleep(0.05)
        raise AssertionError(f"not every job ended: {self.queue()}")


def serve_jobs(*args, env=None):
    proc, base = start_server("serve", "--jobs", *args, env=env)
    return proc, base.rsplit("/v1", 1)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """redis-server with an append-only file, so a restart keeps the streams."""

    def __init__(self, workdir):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.dir = str(workdir)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
             "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.cmd("PING") == "PONG":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cmd(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(("*%d\r\n" % len(args) + "".join(
                "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)).encode())
            data = s.recv(65536).decode()
        head = data.split("\r\n", 1)[0]
        if head[0] in "+-":
            return head[1:]
        if head[0] == ":":
            return int(head[1:])
        return data

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.stop(signal.SIGKILL)


def start_worker(redis_url, base_url, *extra):
    return subprocess.Popen([DSPYC, "worker", "--redis", redis_url, "--base-url", base_url,
                             "--model", "sim", "--visibility-timeout", "1", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop_workers(workers):
    for w in workers:
        if w.poll() is None:
            w.terminate()
    reports = []
    for w in workers:
        try:
            _, err = w.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            w.kill()
            _, err = w.communicate()
        if "Sanitizer" in err or "runtime error:" in err:
            reports.append(err)
    assert not reports, "\n".join(reports)  # a sanitizer build found a bug in a worker


# ---- specs, limits, auth -------------------------------------------------------------------

def test_bad_specs_name_the_field_and_bodies_are_bounded(tmp_path):
    _, base = start_sim()
    tok = tmp_path / "tokens"
    tok.write_text("s3cret\n")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--auth-token-file", tok,
                        "--max-body", "65536")
    api = Api(url, token="s3cret")
    cases = [
        ({"signature": "q -> a"}, "kind"),
        ({"kind": "train"}, "kind"),
        (small_opt(optimizer="adam"), "optimizer"),
        (small_opt(priority=12), "priority"),
        (small_opt(trainset=[1, 2]), "trainset[0]"),
        (small_opt(devset=TRAIN[:2]), "devset"),  # an eval key in an optimize job
        (small_opt(metric="bleu:answer"), "metric"),
        ({"kind": "eval", "signature": "question -> answer", "metric": "exact_match:answer"},
         "devset"),
    ]
    for spec, field in cases:
        st, doc, _ = api.call("POST", "/v1/jobs", spec)
        assert st == 400, (spec, doc)
        assert f"'{field}'" in doc["error"]["message"], doc
    st, doc, _ = api.call("POST", "/v1/jobs", b"{not json")
    assert st == 400 and "not JSON" in doc["error"]["message"]
    st, _, _ = api.call("POST", "/v1/jobs", json.dumps(small_opt(junk="x" * 100000)))
    assert st == 413
    assert api.queue()["jobs"] == 0  # nothing bad was accepted
    st, _, _ = Api(url).call("GET", "/v1/queue")  # no token
    assert st == 401
    st, _, _ = Api(url, token="wrong").call("POST", "/v1/jobs", small_opt())
    assert st == 401


# ---- many concurrent optimizations ---------------------------------------------------------

@pytest.mark.parametrize("n", [100, 500, 1000])
def test_concurrent_small_optimizations_all_end(tmp_path, n):
    _, base = start_sim("--record", tmp_path / "rec.jsonl")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "8",
                        "--db", tmp_path / "jobs.sqlite", "--max-queue", "5000")
    api = Api(url)
    t0 = time.time()
    ids = [api.submit(small_opt(i, optimizer="labeled" if i % 2 else "bootstrap"))
           for i in range(n)]
    q = api.wait_all(n, timeout=120)
    wall = time.time() - t0
    print(f"\n{n} optimization jobs in {wall:.2f} s: {n / wall:.0f} jobs/s, {q['ended']}")
    assert q["ended"]["succeeded"] >= 0.99 * n, q
    assert sum(q["ended"].values()) == n
    assert api.stored_results(q["ended"]["succeeded"]) == q["ended"]["succeeded"]  # one each
    sample = api.job(ids[-1])
    assert sample["state"] == "succeeded" and sample["best_score"] is not None
    st, res, _ = api.call("GET", f"/v1/jobs/{ids[0]}/result")
    assert st == 200 and res["state"]["demos"] and "report" in res


# ---- priorities, backpressure, idempotency, cancellation -------------------------------------

def test_priority_order_then_fifo(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "1")
    api = Api(url)
    blocker = api.submit({"kind": "noop", "sleep_ms": 600})
    time.sleep(0.2)  # the blocker is running; the rest wait in the queue
    order = [(p, i) for i, p in enumerate([0, 5, 9, 5, 0, 9, 3, 5])]
    ids = {api.submit({"kind": "noop", "priority": p}): (p, i) for p, i in order}
    api.wait_all(len(ids) + 1)
    started = sorted(ids, key=lambda j: api.job(j)["started_at"])
    got = [ids[j] for j in started]
    assert got == sorted(order, key=lambda t: (-t[0], t[1])), got
    assert api.job(blocker)["state"] == "succeeded"


def test_backpressure_at_90_percent_loses_nothing(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "1",
                        "--max-queue", "20")
    api = Api(url)
    api.submit({"kind": "noop", "sleep_ms": 1500})
    time.sleep(0.2)
    accepted, refused = [], []
    for i in range(25):
        st, doc, hdr = api.call("POST", "/v1/jobs", {"kind": "noop"})
        if st == 202:
            accepted.append(doc["id"])
        else:
            assert st == 429, doc
            assert int(hdr["Retry-After"]) >= 1
            assert "full" in doc["error"]["message"] and "90 %" in doc["error"]["message"]
            refused.append(doc)
    assert len(accepted) == 18 and len(refused) == 7  # 90 % of 20
    q = api.queue()
    assert q["queued"] == 18 and q["depth"]["0"] == 18
    q = api.wait_all(19)
    assert q["ended"]["succeeded"] == 19
    assert all(api.job(j)["state"] == "succeeded" for j in accepted)


def test_idempotency_key_returns_the_first_job(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim")
    api = Api(url)
    st, a, _ = api.call("POST", "/v1/jobs", small_opt(idempotency_key="task-7"))
    st2, b, _ = api.call("POST", "/v1/jobs", small_opt(1, idempotency_key="task-7"))
    assert st == 202 and st2 == 200 and a["id"] == b["id"] and b["existing"] is True
    api.wait_all(1)
    assert api.queue()["jobs"] == 1


def test_cancel_queued_and_running(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "1")
    api = Api(url)
    running = api.submit({"kind": "noop", "sleep_ms": 20000})
    queued = api.submit({"kind": "noop"})
    time.sleep(0.3)
    assert api.job(running)["state"] == "running" and api.job(queued)["state"] == "queued"
    assert api.call("DELETE", f"/v1/jobs/{queued}")[0] == 200
    assert api.job(queued)["state"] == "cancelled"
    t = time.time()
    assert api.call("DELETE", f"/v1/jobs/{running}")[0] == 200
    while api.job(running)["state"] == "running":
        time.sleep(0.02)
    assert time.time() - t < 2
    assert api.job(running)["state"] == "cancelled"
    st, doc, _ = api.call("DELETE", f"/v1/jobs/{running}")
    assert st == 409 and "already cancelled" in doc["error"]["message"]
    assert api.call("GET", f"/v1/jobs/{queued}/result")[0] == 409
    assert api.call("GET", "/v1/jobs/job-nope")[0] == 404
    listed = api.call("GET", "/v1/jobs?state=cancelled")[1]["jobs"]
    assert {j["id"] for j in listed} == {running, queued}
    assert api.call("GET", "/v1/jobs?state=bogus")[0] == 400


def test_event_feed_streams_states_and_progress(tmp_path):
    _, base = start_sim("--latency-ms", "20")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "1")
    api = Api(url)
    jid = api.submit(small_opt(optimizer="random-search", num_candidates=2, trainset=TRAIN[:6]))
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", f"/v1/jobs/{jid}/events")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    events = []
    for line in r.read().decode().splitlines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[-1] == "succeeded" and "running" in states
    prog = [e["progress"] for e in events if e["type"] == "progress"]
    assert prog and prog[-1]["planned"] >= 1 and prog[-1]["done"] >= 1
    assert "eta_s" in prog[-1] and "iterations_per_s" in prog[-1]


def test_mipro_job_progress_through_its_concurrent_phases(tmp_path):
    """A MIPROv2 job: after its baseline, while its demo sets bootstrap and its proposer runs
    (concurrently), progress shows none of the planned trials done and the LM calls growing;
    then the trials
    count up, never back, to the planned number. 60 ms per call, so each phase outlasts the
    feed's 50 ms between progress events."""
    _, base = start_sim("--latency-ms", "60")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "1")
    api = Api(url)
    jid = api.submit({"kind": "optimize", "signature": "question -> answer",
                      "optimizer": "mipro", "trainset": TRAIN[:20], "valset": TRAIN[20:40],
                      "metric": "exact_match:answer", "num_trials": 4, "num_candidates": 4,
                      "concurrency": 8})
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", f"/v1/jobs/{jid}/events")
    events = [json.loads(line[6:]) for line in conn.getresponse().read().decode().splitlines()
              if line.startswith("data: ")]
    assert [e["state"] for e in events if e["type"] == "state"][-1] == "succeeded"
    prog = [e["progress"] for e in events if e["type"] == "progress"]
    prog.append(api.job(jid)["progress"])
    done = [p["done"] for p in prog]
    assert done == sorted(done) and done[-1] == prog[-1]["planned"] == 4
    planned = [p["planned"] for p in prog]
    assert set(planned) <= {0, 4} and planned == sorted(planned)  # 0 until the plan is made
    # the baseline, then (at most 20 events a second) the bootstraps' or the proposals' start
    setup = [p for p in prog if p["done"] == 0]
    assert len(setup) >= 2 and setup[-1]["planned"] == 4, prog
    assert setup[-1]["lm_calls"] > setup[0]["lm_calls"]
    calls = [p["lm_calls"] for p in prog]
    assert calls == sorted(calls)


# ---- the shared rate limit -----------------------------------------------------------------

def test_shared_rate_limit_held_within_5_percent_across_200_jobs(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    rpm = 1800  # 30 requests a second for all jobs together
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "50",
                        "--rpm", rpm, "--cache", "off")
    api = Api(url)
    for i in range(200):
        api.submit({"kind": "eval", "signature": "question -> answer",
                    "devset": [{"question": f"What is {i} plus {i + 1}?",
                                "answer": str(2 * i + 1)}], "metric": "exact_match:answer"})
    q = api.wait_all(200, timeout=60)
    assert q["ended"]["succeeded"] == 200
    ts = sorted(json.loads(l)["ts"] for l in rec.read_text().splitlines())
    assert len(ts) == 200
    # The bucket starts full (one second of burst); after it, the rate is the limit's.
    steady = ts[30:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    print(f"\nsteady rate {rate:.2f}/s for a limit of {rpm / 60:.0f}/s")
    assert abs(rate - rpm / 60) <= 0.05 * rpm / 60, rate
    # no one-second window of the simulator's clock holds more than the limit plus the burst
    j = 0
    for i in range(len(ts)):
        while ts[i] - ts[j] > 1.0:
            j += 1
        assert i - j + 1 <= 2 * rpm / 60 * 1.05


# ---- restarts --------------------------------------------------------------------------------

def test_server_killed_and_restarted_finishes_queued_and_running_jobs(tmp_path):
    _, base = start_sim("--latency-ms", "30")
    db = tmp_path / "jobs.sqlite"
    proc, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "2", "--db", db)
    api = Api(url)
    ids = [api.submit(small_opt(i, optimizer="random-search", num_candidates=2,
                                trainset=TRAIN[:6])) for i in range(6)]
    deadline = time.time() + 20
    while sum(api.job(j)["state"] == "running" for j in ids) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop_sim(proc)
    proc2, url2 = serve_jobs("--base-url", base, "--model", "sim", "--workers", "2", "--db", db)
    api2 = Api(url2)
    q = api2.wait_all(6, timeout=60)
    assert q["ended"]["succeeded"] == 6 and q["jobs"] == 6
    assert api2.stored_results(6) == 6
    attempts = sorted(api2.job(j)["attempts"] for j in ids)
    assert attempts[-1] == 2 and attempts[0] == 1  # the interrupted ones ran again
    assert (tmp_path / "jobs.sqlite.ckpt").is_dir()  # their checkpoints


# ---- Redis workers ---------------------------------------------------------------------------

def test_worker_killed_mid_run_on_three_workers(tmp_path, redis):
    _, base = start_sim("--latency-ms", "5")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url,
                        "--db", tmp_path / "jobs.sqlite")
    api = Api(url)
    workers = [start_worker(redis.url, base, "--concurrency", "4", "--name", f"w{i}")
               for i in range(3)]
    try:
        deadline = time.time() + 10
        while api.queue()["redis_workers"]["workers"] < 3 and time.time() < deadline:
            time.sleep(0.05)
        pool = api.queue()["redis_workers"]
        assert pool["workers"] == 3 and pool["slots"] == 12  # the pool as the workers report it
        n = 1000
        for i in range(n):  # a few long jobs, so every worker holds some at times
            api.submit({"kind": "noop", "sleep_ms": 1500 if i % 50 == 1 else 10} if i % 3
                       else small_opt(i))
        # kill w0 once its heartbeat says it is running jobs: they are reclaimed
        deadline = time.time() + 20
        while time.time() < deadline:
            beat = redis.cmd("HGET", "dspyc:jobs:workers", "w0").split("\r\n")
            if len(beat) > 1 and int(beat[1].split()[1]) > 0:
                break
            time.sleep(0.01)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        q = api.wait_all(n, timeout=60)
        assert q["ended"]["succeeded"] == n, q
        assert api.stored_results(n) == n  # one result per job
        jobs = api.call("GET", f"/v1/jobs?limit={n}")[1]["jobs"]
        assert max(j["attempts"] for j in jobs) >= 2  # the dead worker's jobs ran again
        keys = int(redis.cmd("EVAL", "return #redis.call('KEYS', 'dspyc:jobs:result:*')", "0"))
        assert keys == n
        pending = redis.cmd("XPENDING", "dspyc:jobs:p0", "dspyc-workers")
        assert pending.startswith("*4\r\n:0"), pending  # everything acknowledged
    finally:
        stop_workers(workers)


def test_redis_restarted_mid_run(tmp_path, redis):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url,
                        "--db", tmp_path / "jobs.sqlite")
    api = Api(url)
    workers = [start_worker(redis.url, base, "--concurrency", "4") for _ in range(2)]
    try:
        n = 200
        for i in range(n):
            api.submit({"kind": "noop", "sleep_ms": 20})
        time.sleep(0.3)
        redis.stop()
        # accepted while Redis is away: it is on disk, and reaches its stream once Redis is back
        st, doc, _ = api.call("POST", "/v1/jobs", {"kind": "noop"})
        assert st == 202, doc
        time.sleep(0.5)
        assert api.queue()["redis_workers"]["unpublished"] == 1
        redis.start()
        q = api.wait_all(n + 1, timeout=30)
        assert q["ended"]["succeeded"] == n + 1, q
        assert api.stored_results(n + 1) == n + 1
        assert api.job(doc["id"])["state"] == "succeeded"
    finally:
        stop_workers(workers)


def test_dead_letter_after_max_attempts(tmp_path, redis):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url)
    api = Api(url)
    jid = api.submit({"kind": "noop", "sleep_ms": 60000})
    w = start_worker(redis.url, base, "--max-attempts", "1")
    try:
        deadline = time.time() + 10
        while api.job(jid)["state"] != "running" and time.time() < deadline:
            time.sleep(0.05)
        w.send_signal(signal.SIGKILL)
        w.wait()
        w = start_worker(redis.url, base, "--max-attempts", "1")
        deadline = time.time() + 15
        while api.job(jid)["state"] == "running" and time.time() < deadline:
            time.sleep(0.1)
        job = api.job(jid)
        assert job["state"] == "dead" and "delivered 1 times" in job["error"], job
        assert redis.cmd("XLEN", "dspyc:jobs:dead") == 1
    finally:
        stop_workers([w])


def test_cancel_through_redis(tmp_path, redis):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url)
    api = Api(url)
    w = start_worker(redis.url, base, "--concurrency", "1")
    try:
        running = api.submit({"kind": "noop", "sleep_ms": 30000})
        queued = api.submit({"kind": "noop", "sleep_ms": 10})
        deadline = time.time() + 10
        while api.job(running)["state"] != "running" and time.time() < deadline:
            time.sleep(0.05)
        assert api.call("DELETE", f"/v1/jobs/{queued}")[0] == 200
        assert api.call("DELETE", f"/v1/jobs/{running}")[0] == 200
        after = api.submit({"kind": "noop"})
        deadline = time.time() + 10
        while api.job(after)["state"] != "succeeded" and time.time() < deadline:
            time.sleep(0.05)
        assert api.job(after)["state"] == "succeeded"  # the worker let go of the cancelled one
        assert api.job(running)["state"] == "cancelled"
        assert api.job(queued)["state"] == "cancelled"
    finally:
        stop_workers([w])


# ---- the client ------------------------------------------------------------------------------

def test_jobs_client_submit_status_list_wait_result_cancel(tmp_path):
    _, base = start_sim()
    tok = tmp_path / "tokens"
    tok.write_text("t0k\n")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--auth-token-file", tok)

    def jobs(*args, ok=0):
        r = subprocess.run([DSPYC, "jobs", *map(str, args), "--server", url, "--token-file", tok],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == ok, r.stderr
        return r

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(small_opt()))
    jid, state = jobs("submit", spec, "--priority", "7").stdout.split()
    assert state in ("queued", "running", "succeeded")
    assert jobs("wait", jid).stdout.split() == [jid, "succeeded"]
    status = json.loads(jobs("status", jid).stdout)
    assert status["priority"] == 7 and status["state"] == "succeeded"
    assert jid in jobs("list", "--state", "succeeded").stdout
    save = tmp_path / "state.json"
    jobs("result", jid, "--save", save)
    assert json.loads(save.read_text())["demos"]  # a DSPy state: predictor -> demos
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "optimize"}))
    assert "'signature'" in jobs("submit", bad, ok=2).stderr
    long = tmp_path / "long.json"
    long.write_text(json.dumps({"kind": "noop", "sleep_ms": 30000}))
    lid = jobs("submit", long).stdout.split()[0]
    assert "still running" in jobs("wait", lid, "--timeout", "0.3", ok=2).stderr
    assert len(jobs("list", "--limit", "1").stdout.splitlines()) == 1
    jobs("cancel", lid)
    assert jobs("wait", lid, ok=1).stdout.split()[1] == "cancelled"
    assert "a job id" in jobs("status", "../etc", ok=2).stderr


# ---- the remaining flags -------------------------------------------------------------------

def test_concurrency_cap_backpressure_mark_and_checkpoint_dir(tmp_path):
    _, base = start_sim()
    ck = tmp_path / "ck"
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "4",
                        "--max-concurrent-jobs", "2", "--max-queue", "10", "--backpressure",
                        "0.5", "--checkpoints", ck)
    api = Api(url)
    for _ in range(2):
        api.submit({"kind": "noop", "sleep_ms": 800})
    time.sleep(0.2)
    codes = [api.call("POST", "/v1/jobs", {"kind": "noop", "sleep_ms": 10})[0] for _ in range(8)]
    assert codes == [202] * 5 + [429] * 3  # 50 % of 10
    peak = 0
    while sum(api.queue()["ended"].values()) < 7:
        q = api.queue()
        peak = max(peak, q["running"])
        assert q["running"] <= 2 and q["max_concurrent"] == 2 and q["workers"] == 4
        time.sleep(0.01)
    assert peak == 2
    jid = api.submit(small_opt())
    api.wait_all(8)
    assert api.job(jid)["state"] == "succeeded"
    assert (ck / jid).is_dir()  # the optimizer's checkpoint of this job


def test_out_of_attempts_after_restarts_is_dead(tmp_path):
    _, base = start_sim()
    db = tmp_path / "jobs.sqlite"
    proc, url = serve_jobs("--base-url", base, "--model", "sim", "--db", db, "--max-attempts", "1")
    api = Api(url)
    jid = api.submit({"kind": "noop", "sleep_ms": 60000})
    while api.job(jid)["state"] != "running":
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop_sim(proc)
    _, url2 = serve_jobs("--base-url", base, "--model", "sim", "--db", db, "--max-attempts", "1")
    job = Api(url2).job(jid)
    assert job["state"] == "dead" and "interrupted" in job["error"]


def test_worker_name_in_the_registry(tmp_path, redis):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url)
    w = start_worker(redis.url, base, "--name", "gpu-box-1", "--concurrency", "3")
    try:
        api = Api(url)
        deadline = time.time() + 10
        while api.queue()["redis_workers"]["workers"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert api.queue()["redis_workers"]["slots"] == 3
        assert "gpu-box-1" in redis.cmd("HKEYS", "dspyc:jobs:workers")
    finally:
        stop_workers([w])


def test_help_texts_name_every_flag():
    for cmd, flags in ((["serve", "--jobs"], ["--db", "--redis", "--workers",
                                              "--max-concurrent-jobs", "--max-queue",
                                              "--backpressure", "--max-attempts",
                                              "--checkpoints", "--auth-token-file", "--rpm",
                                              "--memory-budget", "--retention"]),
                       (["worker"], ["--redis", "--concurrency", "--name", "--max-attempts",
                                     "--visibility-timeout", "--checkpoints", "--base-url",
                                     "--memory-budget"]),
                       (["jobs"], ["--server", "--token-file", "--priority",
                                   "--idempotency-key", "--state", "--limit", "--timeout",
                                   "--save", "--file", "--older-than"])):
        r = subprocess.run([DSPYC, *cmd, "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0
        for f in flags:
            assert f in r.stdout, (cmd, f)
    r = subprocess.run([DSPYC, "worker"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--redis URL is required" in r.stderr
    r = subprocess.run([DSPYC, "worker", "--redis", "http://x"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1 and "redis://HOST" in r.stderr


def test_cancel_a_running_optimization(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--latency-ms", "40", "--record", rec)
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--cache", "off")
    api = Api(url)
    jid = api.submit(small_opt(optimizer="random-search", num_candidates=16, trainset=TRAIN[:8],
                               parallel_trials=1, concurrency=1))
    while not (api.job(jid)["progress"] or {}).get("done"):
        time.sleep(0.02)
    assert api.call("DELETE", f"/v1/jobs/{jid}")[0] == 200
    t = time.time()
    while api.job(jid)["state"] == "running" or api.queue()["running"]:
        time.sleep(0.02)
    assert time.time() - t < 5  # it stops after its current trial
    job = api.job(jid)
    assert job["state"] == "cancelled" and job["progress"]["done"] < job["progress"]["planned"]
    n = len(rec.read_text().splitlines())
    time.sleep(0.5)
    assert len(rec.read_text().splitlines()) == n  # no LM call after it stopped


def test_server_stops_cleanly_with_an_event_feed_open(tmp_path):
    _, base = start_sim()
    proc, url = serve_jobs("--base-url", base, "--model", "sim")
    api = Api(url)
    jid = api.submit({"kind": "noop", "sleep_ms": 60000})
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", f"/v1/jobs/{jid}/events")
    r = conn.getresponse()
    assert r.readline().startswith(b"event: state")
    assert stop_sim(proc) == 0  # SIGTERM: the feed ends, the server exits 0
    try:
        r.read()  # the stream ends, cleanly or cut off; it does not hang
    except http.client.IncompleteRead:
        pass


# ---- batches, memory budgets, retention and purge ----------------------------------------------

def test_batch_route_applies_backpressure_per_item(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "1",
                        "--max-queue", "10")
    api = Api(url)
    api.submit({"kind": "noop", "sleep_ms": 1500})  # holds the only worker
    time.sleep(0.2)
    specs = [{"kind": "noop"}] * 3 + [{"kind": "noop", "priority": 12}] + [{"kind": "noop"}] * 8
    st, doc, hdr = api.call("POST", "/v1/jobs/batch", specs)
    assert st == 200, doc
    items = doc["jobs"]
    assert len(items) == len(specs)  # one answer per spec, in order
    assert [i["status"] for i in items[:3]] == [202] * 3
    assert items[3]["status"] == 400 and "'priority'" in items[3]["error"]
    # 90 % of 10: nine queued at most, the rest refused item by item with a wait
    assert [i["status"] for i in items[4:]] == [202] * 6 + [429] * 2
    assert all(i["retry_after_s"] >= 1 for i in items[10:])
    assert int(hdr["Retry-After"]) >= 1
    assert doc["accepted"] == 9 and doc["refused"] == 3
    q = api.wait_all(10, timeout=30)
    assert q["ended"]["succeeded"] == 10  # every accepted one ran
    assert api.call("POST", "/v1/jobs/batch", {"kind": "noop"})[0] == 400  # not an array
    assert api.call("POST", "/v1/jobs/batch", [])[0] == 400


def test_jobs_submit_file_sends_batches(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "4")
    f = tmp_path / "specs.jsonl"
    f.write_text("".join(json.dumps({"kind": "noop", "idempotency_key": f"k{i % 1200}"}) + "\n"
                         for i in range(2500)))
    r = subprocess.run([DSPYC, "jobs", "submit", "--file", f, "--priority", "4", "--server", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l.split("\t") for l in r.stdout.splitlines()]
    assert len(lines) == 2500  # three batches of at most 1,000, one line per spec
    assert len({l[0] for l in lines}) == 1200  # repeated keys name the first job
    api = Api(url)
    q = api.wait_all(1200, timeout=60)
    assert q["jobs"] == 1200 and q["ended"]["succeeded"] == 1200
    assert api.job(lines[0][0])["priority"] == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "noop"}\n{"kind": "nope"}\nnot json\n')
    r = subprocess.run([DSPYC, "jobs", "submit", "--file", bad, "--server", url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad.jsonl:3" in r.stderr  # the line that is not JSON


def job_windows(api, ids):
    jobs = [api.job(j) for j in ids]
    return sorted((j["started_at"], j["finished_at"]) for j in jobs)


def overlaps(windows):
    return any(b[0] < a[1] for a, b in zip(windows, windows[1:]))


def test_memory_budget_holds_jobs_until_their_share_fits(tmp_path):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--workers", "4",
                        "--memory-budget", "100M")
    api = Api(url)
    big = [api.submit({"kind": "noop", "sleep_ms": 300, "memory_bytes": 60 << 20})
           for _ in range(3)]
    deadline = time.time() + 10
    seen = None
    while time.time() < deadline and api.queue()["ended"]["succeeded"] < 3:
        q = api.queue()
        if q["running"]:
            seen = seen or q["memory"]
            assert q["running"] == 1 and q["memory"]["used"] == 60 << 20
        time.sleep(0.02)
    assert seen and seen["budget"] == 100 << 20 and abs(seen["utilization"] - 0.6) < 1e-9
    assert not overlaps(job_windows(api, big))  # one at a time: two would need 120M
    small = [api.submit({"kind": "noop", "sleep_ms": 300, "memory_bytes": 20 << 20})
             for _ in range(4)]
    api.wait_all(7)
    assert overlaps(job_windows(api, small))  # four of 20M fit together
    assert api.queue()["lm_pool"]["handles"] == 1  # the default model's handle
    metrics = api.call("GET", "/metrics")[1]
    assert "dspyc_jobs_memory_budget_bytes 104857600" in metrics
    assert "dspyc_jobs_lm_handles 1" in metrics


def test_worker_memory_budget(tmp_path, redis):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url)
    api = Api(url)
    w = start_worker(redis.url, base, "--concurrency", "2", "--memory-budget", "64M")
    try:
        deadline = time.time() + 10
        while api.queue()["redis_workers"]["workers"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert api.queue()["redis_workers"]["memory_budget"] == 64 << 20
        slow = api.submit({"kind": "noop", "sleep_ms": 1200, "memory_bytes": 40 << 20})
        time.sleep(0.2)
        fast = api.submit({"kind": "noop", "memory_bytes": 40 << 20})
        api.wait_all(2, timeout=30)
        # the second waited for the first's 40M: without the budget it would end first
        assert api.job(fast)["finished_at"] > api.job(slow)["finished_at"]
    finally:
        stop_workers([w])


def test_workers_lm_pools_in_the_queue(tmp_path, redis):
    """A worker's own LM pool is in its heartbeat: /v1/queue's redis_workers shows its calls
    on the wire (the simulator takes 1.5 s each) and those waiting for its --rpm."""
    _, base = start_sim("--latency-ms", "1500")
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url)
    api = Api(url)
    w = start_worker(redis.url, base, "--rpm", "60", "--cache", "off")
    try:
        devset = [{"question": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(6)]
        api.submit({"kind": "eval", "signature": "question -> answer", "devset": devset,
                    "metric": "exact_match:answer", "concurrency": 6})
        most = {"lm_in_flight": 0, "lm_waiting": 0}
        deadline = time.time() + 20
        while time.time() < deadline and api.queue()["ended"]["succeeded"] < 1:
            rw = api.queue()["redis_workers"]
            for k in most:
                most[k] = max(most[k], rw[k])
            time.sleep(0.05)
        print(f"\nmost seen: {most}")
        # one call a second goes out, each on the wire 1.5 s; the others wait their turn
        assert most["lm_in_flight"] >= 1 and most["lm_waiting"] >= 2
        assert api.queue()["ended"]["succeeded"] == 1
        deadline = time.time() + 10  # the next heartbeats: nothing in flight any more
        while time.time() < deadline and (api.queue()["redis_workers"]["lm_in_flight"] or
                                          api.queue()["redis_workers"]["lm_waiting"]):
            time.sleep(0.05)
        rw = api.queue()["redis_workers"]
        assert rw["lm_in_flight"] == 0 and rw["lm_waiting"] == 0
        assert "dspyc_jobs_redis_lm_in_flight 0" in api.call("GET", "/metrics")[1]
    finally:
        stop_workers([w])


def test_retention_removes_ended_jobs_everywhere(tmp_path, redis):
    _, base = start_sim()
    _, url = serve_jobs("--base-url", base, "--model", "sim", "--redis", redis.url,
                        "--db", tmp_path / "jobs.sqlite", "--retention", "1")
    api = Api(url)
    w = start_worker(redis.url, base)
    try:
        done = api.submit({"kind": "noop"})
        api.wait_all(1, timeout=20)
        assert redis.cmd("EXISTS", f"dspyc:jobs:result:{done}") == 1
        waiting = api.submit({"kind": "noop", "sleep_ms": 4000})
        deadline = time.time() + 10
        while api.call("GET", f"/v1/jobs/{done}")[0] != 404 and time.time() < deadline:
            time.sleep(0.1)
        assert api.call("GET", f"/v1/jobs/{done}")[0] == 404
        assert redis.cmd("EXISTS", f"dspyc:jobs:result:{done}") == 0
        q = api.queue()
        assert q["retention"] == {"seconds": 1.0, "purged": 1}
        assert api.stored_results(0) == 0
        assert api.job(waiting)["state"] == "running"  # not ended: kept
        assert redis.cmd("XLEN", "dspyc:jobs:p0") <= 1  # the acknowledged entry went
    finally:
        stop_workers([w])


def test_purge_one_job_or_by_state_and_age(tmp_path):
    _, base = start_sim()
    db = tmp_path / "jobs.sqlite"
    proc, url = serve_jobs("--base-url", base, "--model", "sim", "--db", db, "--retention", "0")
    api = Api(url)
    ok = [api.submit({"kind": "noop"}) for _ in range(3)]
    bad = [api.submit({"kind": "noop", "fail": "no"}) for _ in range(2)]
    running = api.submit({"kind": "noop", "sleep_ms": 30000})
    api.wait_all(5)
    st, doc, _ = api.call("DELETE", f"/v1/jobs/{running}?purge=1")
    assert st == 409 and "cancel it first" in doc["error"]["message"]
    assert api.call("DELETE", f"/v1/jobs/{ok[0]}?purge=1")[1] == {"id": ok[0], "purged": True}
    assert api.call("GET", f"/v1/jobs/{ok[0]}")[0] == 404
    assert api.call("DELETE", "/v1/jobs?state=running")[0] == 400

    def jobs(*args, rc=0):
        r = subprocess.run([DSPYC, "jobs", *map(str, args), "--server", url],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == rc, r.stderr
        return r.stdout

    assert jobs("purge", "--older-than", "3600") == "purged 0\n"  # none that old
    assert jobs("purge", "--state", "failed") == "purged 2\n"
    assert all(api.call("GET", f"/v1/jobs/{j}")[0] == 404 for j in bad)
    assert jobs("purge", ok[1]) == "purged 1\n"
    assert api.queue()["jobs"] == 2  # ok[2] and the running one
    jobs("purge", "--state", "queued", rc=2)
    # gone from the store too: a restart does not bring them back
    stop_sim(proc)
    _, url2 = serve_jobs("--base-url", base, "--model", "sim", "--db", db)
    api2 = Api(url2)
    assert api2.call("GET", f"/v1/jobs/{ok[1]}")[0] == 404
    assert api2.job(ok[2])["state"] == "succeeded"
    assert api2.queue()["stored_results"] == 1
