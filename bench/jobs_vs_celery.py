#!/usr/bin/env python3
"""The optimization service's queue (a benchmark program, not a test): jobs per second and
the queue's own overhead per job, against Celery (the peer) on the same Redis, in one run on
this machine.

Measured, for 1, 2, 4 and 8 workers:
  dspyc no-op      `dspyc serve --jobs --redis` and that many `dspyc worker` processes
                   (concurrency 1 each): N no-op jobs submitted over HTTP, until every one
                   has ended (its result stored in Redis and in SQLite)
  celery no-op     a Celery worker (prefork, that many processes, acks_late, Redis broker
                   and result backend): N no-op tasks sent with apply_async, until every
                   result is back
  dspyc optimize   `dspyc serve --jobs` with that many worker threads: N small real
                   optimizations (labeled/bootstrap on four examples, the simulator as LM)
The overhead per job is the wall time per no-op job with one worker (a no-op costs nothing,
so what is left is the queue: submit, store, deliver, acknowledge, report the result); the
time to submit one job (dspyc: an HTTP POST answered once the job is in SQLite; Celery:
apply_async from this Python process) is printed beside it. With one worker, the same no-ops
are also sent in batches (dspyc: POST /v1/jobs/batch, 1,000 specs a request; Celery: a group
of the tasks), a separate line: the headline stays one submission per job for both.

usage: bench/jobs_vs_celery.py [--build build] [--jobs 1000] [--workers 1,2,4,8]
                               [--no-celery]
Output: one line per measurement, then a JSON document on the last line.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [json.loads(l) for l in open(os.path.join(ROOT, "examples", "arith", "train.jsonl"))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, pattern, timeout=60, cwd=None, env=None):
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True, cwd=cwd, env=env)
    found, out = [], []

    def read():
        for line in p.stdout:
            out.append(line)
            m = re.search(pattern, line) if pattern else None
            if m and not found:
                found.append(m.group(1))
    threading.Thread(target=read, daemon=True).start()
    t0 = time.monotonic()
    while pattern and not found and p.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    if pattern and not found:
        p.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {''.join(out)[-2000:]}")
    return p, (found[0] if found else None)


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Redis:
    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                if self.cmd("PING") == "+PONG":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cmd(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(("*%d\r\n" % len(args) + "".join(
                "$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
            return s.recv(4096).decode().split("\r\n")[0]


class Api:
    def __init__(self, url):
        host, port = url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def call(self, method, path, body=None):
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())


def run_dspyc(api, specs, expect_ended=0, batch=0):
    t0 = time.perf_counter()
    for i in range(0, len(specs), batch or 1):
        if batch:
            st, doc = api.call("POST", "/v1/jobs/batch", specs[i:i + batch])
            if st != 200 or doc["refused"]:
                raise RuntimeError(f"submit: {st} {doc}")
            continue
        st, doc = api.call("POST", "/v1/jobs", specs[i])
        if st != 202:
            raise RuntimeError(f"submit: {st} {doc}")
    SUBMIT[0] = (time.perf_counter() - t0) / max(1, len(specs))
    n = len(specs) + expect_ended
    while True:
        q = api.call("GET", "/v1/queue")[1]
        if sum(q["ended"].values()) >= n:
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    return wall, q


def small_opt(i):
    return {"kind": "optimize", "signature": "question -> answer",
            "optimizer": "labeled" if i % 2 else "bootstrap", "trainset": TRAIN[:4],
            "metric": "exact_match:answer", "seed": i % 4, "max_bootstrapped_demos": 2,
            "concurrency": 4}


CELERY_APP = """
import os
from celery import Celery
app = Celery("bench", broker=os.environ["BENCH_REDIS"], backend=os.environ["BENCH_REDIS"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, result_expires=600,
                broker_connection_retry_on_startup=True, task_ignore_result=False)

@app.task
def noop():
    return {"ok": True}
"""


def run_celery(redis, workers, n, tmp, group=False):
    with open(os.path.join(tmp, "bench_tasks.py"), "w") as f:
        f.write(CELERY_APP)
    env = dict(os.environ, BENCH_REDIS=redis.url + "/1", PYTHONPATH=tmp)
    w, _ = start([sys.executable, "-m", "celery", "-A", "bench_tasks", "worker", "--pool",
                  "prefork", "-c", str(workers), "--without-gossip", "--without-mingle",
                  "--without-heartbeat", "-l", "info"], r"(ready)\.", cwd=tmp, env=env)
    try:
        sys.path.insert(0, tmp)
        os.environ["BENCH_REDIS"] = redis.url + "/1"
        import importlib
        import bench_tasks
        importlib.reload(bench_tasks)
        bench_tasks.noop.delay().get(timeout=30)  # warm
        t0 = time.perf_counter()
        if group:
            from celery import group as celery_group
            rs = celery_group(bench_tasks.noop.s() for _ in range(n)).apply_async().results
        else:
            rs = [bench_tasks.noop.apply_async() for _ in range(n)]
        SUBMIT[0] = (time.perf_counter() - t0) / n
        # done when every result is in the backend (read back below, untimed)
        client = bench_tasks.app.backend.client
        while len(client.keys("celery-task-meta-*")) < n + 1:
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        ok = sum(1 for r in rs if r.get(timeout=120) == {"ok": True})
        sys.path.remove(tmp)
        return wall, ok
    finally:
        stop(w)


T0 = time.perf_counter()
SUBMIT = [0.0]  # seconds per job of the last submission loop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--no-celery", action="store_true")
    a = ap.parse_args()
    dspyc = os.path.abspath(os.path.join(a.build, "dspyc"))
    counts = [int(x) for x in a.workers.split(",")]
    n = a.jobs
    out = {"jobs": n, "noop": {}, "celery_noop": {}, "optimize": {}, "optimize_success": {}}
    redis = Redis()
    tmp = tempfile.mkdtemp(prefix="bench-jobs-")
    sim, sim_url = start([dspyc, "sim", "--port", "0"], r"listening on (http://\S+/v1)")
    try:
        for w in counts:
            redis.cmd("FLUSHDB")
            db = os.path.join(tmp, f"noop{w}.sqlite")
            srv, url = start([dspyc, "serve", "--jobs", "--port", "0", "--redis", redis.url,
                              "--db", db, "--base-url", sim_url, "--model", "sim",
                              "--max-queue", str(4 * n)],
                             r"listening on (http://\S+)/v1")
            ws = [start([dspyc, "worker", "--redis", redis.url, "--concurrency", "1",
                         "--base-url", sim_url, "--model", "sim"], None)[0]
                  for _ in range(w)]
            try:
                api = Api(url)
                run_dspyc(api, [{"kind": "noop"}] * 20)  # warm
                wall, q = run_dspyc(api, [{"kind": "noop"}] * n, expect_ended=20)
                out["noop"][w] = n / wall
                out.setdefault("submit_us", {})[w] = 1e6 * SUBMIT[0]
                print(f"dspyc no-op, {w} worker(s): {n} jobs in {wall:.3f} s = "
                      f"{n / wall:,.0f} jobs/s, {q['ended']['succeeded'] - 20} succeeded; "
                      f"submitting (HTTP, stored): {1e6 * SUBMIT[0]:.0f} us/job",
                      flush=True)
                if w == counts[0]:
                    wall, q = run_dspyc(api, [{"kind": "noop"}] * n, expect_ended=20 + n,
                                        batch=1000)
                    out["noop_batch_us"] = 1e6 * wall / n
                    print(f"dspyc no-op in batches of 1,000, {w} worker(s): {n} jobs in "
                          f"{wall:.3f} s = {1e6 * wall / n:.0f} us/job", flush=True)
            finally:
                stop(*ws, srv)
            if not a.no_celery:
                redis.cmd("FLUSHALL")
                wall, ok = run_celery(redis, w, n, tmp)
                out["celery_noop"][w] = n / wall
                out.setdefault("celery_submit_us", {})[w] = 1e6 * SUBMIT[0]
                print(f"celery no-op, {w} worker(s): {n} tasks in {wall:.3f} s = "
                      f"{n / wall:,.0f} tasks/s, {ok} succeeded; submitting (apply_async): "
                      f"{1e6 * SUBMIT[0]:.0f} us/task", flush=True)
                if w == counts[0]:
                    redis.cmd("FLUSHALL")
                    wall, ok = run_celery(redis, w, n, tmp, group=True)
                    out["celery_group_us"] = 1e6 * wall / n
                    print(f"celery no-op as one group, {w} worker(s): {n} tasks in {wall:.3f} s"
                          f" = {1e6 * wall / n:.0f} us/task, {ok} succeeded", flush=True)
        for w in counts:
            srv, url = start([dspyc, "serve", "--jobs", "--port", "0", "--workers", str(w),
                              "--db", os.path.join(tmp, f"opt{w}.sqlite"), "--base-url",
                              sim_url, "--model", "sim", "--max-queue", str(4 * n)],
                             r"listening on (http://\S+)/v1")
            try:
                api = Api(url)
                wall, q = run_dspyc(api, [small_opt(i) for i in range(n)])
                ok = q["ended"]["succeeded"]
                out["optimize"][w] = n / wall
                out["optimize_success"][w] = ok / n
                print(f"dspyc small optimizations, {w} worker thread(s): {n} jobs in "
                      f"{wall:.3f} s = {n / wall:,.0f} jobs/s, {100 * ok / n:.1f} % "
                      f"succeeded", flush=True)
            finally:
                stop(srv)
    finally:
        stop(sim)
        redis.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    one = counts[0]
    out["overhead_us"] = 1e6 / out["noop"][one]
    line = f"queue overhead per no-op job, {one} worker: dspyc {out['overhead_us']:.0f} us"
    if out["celery_noop"]:
        out["celery_overhead_us"] = 1e6 / out["celery_noop"][one]
        out["overhead_ratio"] = out["celery_overhead_us"] / out["overhead_us"]
        line += (f", celery {out['celery_overhead_us']:.0f} us: celery / dspyc = "
                 f"{out['overhead_ratio']:.1f}x")
    print(line)
    out["bench_s"] = time.perf_counter() - T0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
