#!/usr/bin/env python3
"""Proxy overhead (a benchmark program, not a test): `dspyc loadtest` at fixed open-loop rates
against `dspyc sim` directly, through `dspyc serve` on a cache miss (--no-cache: every request
goes upstream and its answer is stored) and on a cache hit (the same 64 requests, stored
during a warm-up), and through LiteLLM's proxy (the peer) on the same workload, all in one run
on this machine. Reported: p50 and p99 end-to-end latency of each, and the latency each proxy
adds over going direct, with the ratio of LiteLLM's added p99 to dspyc's.

usage: bench/serve_vs_litellm.py [--build build] [--duration 3] [--rates 1000,5000,10000]
                                 [--litellm-rates 10,100,1000] [--no-litellm]
(dspyc is measured at the LiteLLM rates too, so every LiteLLM figure has its dspyc twin.)
LiteLLM's proxy needs its server packages (fastapi, uvicorn, websockets, backoff, PyJWT, ...;
tests/requirements.txt). Output: one line per measurement, then a JSON document on the last
line.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def start(cmd, pattern, env=None, timeout=60):
    """Start cmd and wait for a line matching pattern (its group 1 is returned)."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True, env=env)
    found, out = [], []

    def read():
        for line in p.stdout:
            out.append(line)
            m = re.search(pattern, line)
            if m and not found:
                found.append(m.group(1))
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t0 = time.monotonic()
    while not found and p.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    if not found:
        p.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {''.join(out)[-2000:]}")
    return p, found[0]


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def loadtest(dspyc, url, rate, duration, warmup=0.5, key_env=None):
    with tempfile.TemporaryDirectory() as d:
        js = os.path.join(d, "r.json")
        extra = ["--api-key-env", key_env] if key_env else []
        subprocess.run([dspyc, "loadtest", "--url", url, "--no-stream", "--rate", str(rate), *extra,
                        "--duration", str(duration), "--arrival", "constant", "--warmup",
                        str(warmup), "--timeout", "10", "--drain", "5", "--connections", "2048",
                        "--json", js, "--quiet"], capture_output=True, text=True)
        try:
            r = json.load(open(js))
        except (OSError, ValueError):
            return None
    return {"rate": rate, "completed": r.get("completed"), "failed": r.get("failed"),
            "throughput": round(r.get("request_throughput") or 0, 1),
            "p50_ms": r.get("p50_e2el_ms"), "p99_ms": r.get("p99_e2el_ms")}


MASTER_ENV = "BENCH_LITELLM_MASTER_KEY"  # the proxy wants one; clients send it as a bearer


def litellm_proxy(sim_url, tmp):
    exe = shutil.which("litellm") or os.path.join(os.path.dirname(sys.executable), "litellm")
    if not os.path.exists(exe):
        return None, None
    cfg = os.path.join(tmp, "litellm.yaml")
    with open(cfg, "w") as f:
        f.write("model_list:\n  - model_name: dspyc-sim\n    litellm_params:\n"
                f"      model: openai/dspyc-sim\n      api_base: {sim_url}\n      api_key: x\n"
                "litellm_settings:\n  cache: false\n  telemetry: false\n")
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
               LITELLM_MASTER_KEY=os.environ[MASTER_ENV])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    env["PYTHONUNBUFFERED"] = "1"
    p = subprocess.Popen([exe, "--config", cfg, "--port", str(free), "--host", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL, env=env)
    port = free
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:  # ready once it answers its liveness route
        if p.poll() is not None:
            sys.stderr.write("litellm proxy exited at start\n")
            return None, None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{free}/health/liveliness",
                                        timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        stop(p)
        sys.stderr.write("litellm proxy did not start within 120 s\n")
        return None, None
    return p, f"http://127.0.0.1:{port}/v1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--litellm-rates", default="10,100,1000")
    ap.add_argument("--no-litellm", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault(MASTER_ENV, "sk-" + os.urandom(16).hex())
    dspyc = os.path.join(a.build, "dspyc")
    rates = [int(x) for x in a.rates.split(",")]
    results = {"load_average": os.getloadavg(), "cores": os.cpu_count(),
               "duration_s": a.duration, "runs": []}
    print(f"# load average {os.getloadavg()}, {os.cpu_count()} cores; load generator, proxy and "
          "simulator share the machine; latency from the intended send time (open loop)")
    sim, sim_port = start([dspyc, "sim", "--port", "0"], r"listening on http://127\.0\.0\.1:(\d+)")
    sim_url = f"http://127.0.0.1:{sim_port}/v1"
    procs = [sim]
    try:
        miss, miss_port = start([dspyc, "serve", "--port", "0", "--upstream", sim_url,
                                 "--cache", "mem", "--no-cache"], r"127\.0\.0\.1:(\d+)/v1")
        hit, hit_port = start([dspyc, "serve", "--port", "0", "--upstream", sim_url,
                               "--cache", "mem"], r"127\.0\.0\.1:(\d+)/v1")
        procs += [miss, hit]
        targets = {"direct": sim_url, "dspyc miss": f"http://127.0.0.1:{miss_port}/v1",
                   "dspyc hit": f"http://127.0.0.1:{hit_port}/v1"}
        loadtest(dspyc, targets["dspyc hit"], 200, 1, 0)  # store the 64 requests
        lite_rates = [int(x) for x in a.litellm_rates.split(",") if x]
        print(f"{'target':12s} {'rate':>6s} {'done':>7s} {'failed':>6s} {'req/s':>8s} "
              f"{'p50 ms':>8s} {'p99 ms':>8s} {'+p50 ms':>8s} {'+p99 ms':>8s}")
        base = {}

        def measure(name, url, rate, key_env=None):
            r = loadtest(dspyc, url, rate, a.duration, key_env=key_env)
            if not r:
                print(f"{name:12s} {rate:6d}  (no result)")
                return
            r["target"] = name
            b = base.get(rate)
            if name == "direct":
                base[rate] = r
            elif b and r["completed"] and r["p50_ms"] is not None and b["p50_ms"] is not None:
                r["added_p50_ms"] = round(r["p50_ms"] - b["p50_ms"], 4)
                r["added_p99_ms"] = round(r["p99_ms"] - b["p99_ms"], 4)
            results["runs"].append(r)
            print(f"{name:12s} {rate:6d} {r['completed'] or 0:7d} {r['failed'] or 0:6d} "
                  f"{r['throughput']:8.0f} {r['p50_ms'] or 0:8.3f} {r['p99_ms'] or 0:8.3f} "
                  f"{r.get('added_p50_ms', 0):8.3f} {r.get('added_p99_ms', 0):8.3f}")

        # dspyc first, then LiteLLM alone: a Python proxy past its capacity keeps its CPU
        # busy with a backlog long after its load stops, which would starve later runs.
        for rate in sorted(set(rates) | set(lite_rates)):
            for name in ("direct", "dspyc miss", "dspyc hit"):
                if name != "direct" and rate not in rates and rate not in lite_rates:
                    continue
                measure(name, targets[name], rate)
        tmp = tempfile.mkdtemp()
        if not a.no_litellm and lite_rates:
            lite, lite_url = litellm_proxy(sim_url, tmp)
            if lite:
                procs.append(lite)
                loadtest(dspyc, lite_url, 20, 2, 0, MASTER_ENV)  # its first requests are slow
                for rate in lite_rates:
                    measure("litellm", lite_url, rate, MASTER_ENV)
                stop(lite)
        for rate in sorted(lite_rates):
            d = next((r for r in results["runs"] if r["target"] == "dspyc miss" and
                      r["rate"] == rate), None)
            l = next((r for r in results["runs"] if r["target"] == "litellm" and
                      r["rate"] == rate), None)
            if not (d and l and "added_p50_ms" in d and "added_p50_ms" in l):
                continue
            for q in ("p50", "p99"):
                dv, lv = d[f"added_{q}_ms"], l[f"added_{q}_ms"]
                ratio = round(lv / dv, 1) if dv > 0 and lv > 0 else None
                results[f"litellm_over_dspyc_added_{q}_at_{rate}"] = ratio
                print(f"# at {rate} req/s, miss, added {q}: LiteLLM {lv:.3f} ms, dspyc serve "
                      f"{dv:.3f} ms" + (f" (ratio {ratio})" if ratio else ""))
            print(f"# at {rate} req/s: LiteLLM completed {l['completed']} of the "
                  f"{int(rate * (a.duration - 0.5))} measured ({l['failed']} failed), dspyc serve "
                  f"{d['completed']}")
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for p in procs:
            stop(p)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
