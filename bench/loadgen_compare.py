#!/usr/bin/env python3
"""Load-generator comparison (a benchmark program, not a test): `dspyc loadtest` against wrk
(Debian) and k6 (Go module, if built) on the same trivial loopback server in the same run,
reported as requests/s and requests per CPU-second of the generator process (its user+system
time from rusage), and SSE events per CPU-second of `dspyc loadtest` against bench_http_hello
--sse (events written at once) and against `dspyc sim` streaming.

usage: bench/loadgen_compare.py [--build build] [--duration 5] [--connections 64] [--k6 PATH]
Output: one line per measurement, then a JSON document on the last line.
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(cmd, env=None):
    """Run cmd to completion; return (stdout, wall s, CPU s of the child and its threads)."""
    c0, t0 = children_cpu(), time.monotonic()
    cmd = [str(x) for x in cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, cpu = time.monotonic() - t0, children_cpu() - c0
    if p.returncode not in (0, 99):
        sys.stderr.write(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-1000:]}\n")
    return p.stdout + p.stderr, wall, cpu


def start(cmd, pattern):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        m = re.search(pattern, line)
        if m:
            return p, m.group(1)
    raise RuntimeError(f"{cmd[0]} did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--k6", default=shutil.which("k6") or os.path.expanduser("~/go/bin/k6"))
    a = ap.parse_args()
    dspyc = os.path.join(a.build, "dspyc")
    hello = os.path.join(a.build, "bench_http_hello")
    d, c = a.duration, a.connections
    results = {"load_average": os.getloadavg(), "cores": os.cpu_count(), "duration_s": d,
               "connections": c, "plain": {}, "sse": {}}
    print(f"# load average {os.getloadavg()}, {os.cpu_count()} cores; generator and server share "
          "the machine; per-CPU-second figures divide by the generator's own CPU time")

    def report(kind, name, reqs, wall, cpu, unit="req"):
        row = {"count": reqs, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
               f"{unit}_per_s": round(reqs / d, 1),
               f"{unit}_per_cpu_s": round(reqs / cpu, 1) if cpu > 0 else None}
        results[kind][name] = row
        print(f"{kind:5s} {name:22s} {reqs / d:11.0f} {unit}/s   {row[unit + '_per_cpu_s'] or 0:11.0f} "
              f"{unit}/CPU-s   (cpu {cpu:.2f} s over {d:.0f} s)")

    srv, port = start([hello, "--port", "0", "--threads", "1"], r"127\.0\.0\.1:(\d+)")
    url = f"http://127.0.0.1:{port}/"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            js = os.path.join(tmp, "r.json")
            _, wall, cpu = run_measured([dspyc, "loadtest", "--http", "--url", url, "--users", c,
                                         "--duration", d, "--quiet", "--json", js])
            r = json.load(open(js))
            report("plain", "dspyc loadtest (1 thr)", r["completed"], wall, cpu)
            if shutil.which("wrk"):
                out, wall, cpu = run_measured(["wrk", "-t1", f"-c{c}", f"-d{d:.0f}s", url])
                m = re.search(r"(\d+) requests in", out)
                report("plain", "wrk -t1", int(m.group(1)) if m else 0, wall, cpu)
            else:
                print("plain wrk: not installed (apt-get install wrk)")
            if a.k6 and os.path.exists(a.k6):
                script = os.path.join(tmp, "k6.js")
                with open(script, "w") as f:
                    f.write("import http from 'k6/http';\n"
                            f"export const options = {{ vus: {c}, duration: '{d:.0f}s' }};\n"
                            f"export default function () {{ http.get('{url}'); }}\n")
                js6 = os.path.join(tmp, "k6.json")
                env = dict(os.environ, K6_NO_USAGE_REPORT="true")
                _, wall, cpu = run_measured([a.k6, "run", "--quiet", "--no-usage-report",
                                             "--summary-export", js6, script], env=env)
                n = json.load(open(js6))["metrics"]["http_reqs"]["count"]
                report("plain", "k6 (GOMAXPROCS all)", n, wall, cpu)
            else:
                print("plain k6: not built (go install go.k6.io/k6@latest)")
    finally:
        srv.terminate()
        srv.wait()

    events = 64
    srv, port = start([hello, "--port", "0", "--sse", str(events)], r"127\.0\.0\.1:(\d+)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            js = os.path.join(tmp, "r.json")
            _, wall, cpu = run_measured([dspyc, "loadtest", "--url", f"http://127.0.0.1:{port}/v1",
                                         "--users", c, "--duration", d, "--quiet", "--json", js])
            r = json.load(open(js))
            report("sse", "dspyc <- http_hello", r["total_output_tokens"], wall, cpu, "event")
    finally:
        srv.terminate()
        srv.wait()
    sim, base = start([dspyc, "sim", "--port", "0", "--reply-tokens", str(events)],
                      r"listening on (http://\S+/v1)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            js = os.path.join(tmp, "r.json")
            _, wall, cpu = run_measured([dspyc, "loadtest", "--url", base, "--users", c,
                                         "--duration", d, "--quiet", "--json", js])
            r = json.load(open(js))
            n = r["count_itl"] + r["completed"]  # token-bearing events
            report("sse", "dspyc <- dspyc sim", n, wall, cpu, "event")
    finally:
        sim.terminate()
        sim.wait()
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
