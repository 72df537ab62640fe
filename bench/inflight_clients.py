"""Calls in flight, libcurl against the engine's own HTTP/1.1 client in the same run.

Starts `dspyc sim --latency-ms 2000` and runs bench_inflight (10,000 calls in flight through
dspy_program_batch_stream) twice: with DSPYC_HTTP=curl and with the default client. Prints
each run's records/s against the ideal 5,000/s and the peak RSS growth per call in flight.
Fixed output format; not a pass/fail test.

usage: python bench/inflight_clients.py [--build build] [--concurrency 10000] [--records 30000]
"""
import argparse
import os
import re
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on (http://\S+/v1)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--concurrency", default="10000")
    ap.add_argument("--records", default="30000")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    dspyc = os.path.join(ROOT, a.build, "dspyc")
    sim = subprocess.Popen([dspyc, "sim", "--port", "0", "--latency-ms", "2000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in sim.stderr:
            m = LISTENING.search(line)
            if m:
                url = m.group(1)
                break
        if not url:
            raise RuntimeError("dspyc sim did not start")
        print(f"# bench_inflight: {a.records} records at concurrency {a.concurrency}, 2 s per "
              "call; libcurl vs the engine's own HTTP/1.1 client")
        for client in ("curl", "own"):
            env = dict(os.environ, DSPYC_HTTP=client)
            out = subprocess.run([os.path.join(ROOT, a.build, "bench_inflight"), "--url", url,
                                  "--latency-ms", "2000", "--concurrency", a.concurrency,
                                  "--records", a.records], capture_output=True, text=True,
                                 check=True, env=env).stdout
            last = out.strip().splitlines()[-1]
            print(f"client {client:4s} {last}")
            sys.stdout.flush()
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    main()
