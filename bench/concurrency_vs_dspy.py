"""Concurrency benchmark, dspyc against Python DSPy in the same run.

Starts `dspyc sim --latency-ms 100` and `dspyc sim --latency-ms 20`, runs bench_concurrency
(throughput vs concurrency through dspy_program_batch, then the DSRs-style scheduling case:
256 calls of 20 ms at concurrency 16, ideal 320 ms; again with DSPYC_HTTP=curl, so libcurl
and the engine's own HTTP/1.1 client are compared in the same run), then the same case through
DSPy's `dspy.Parallel(num_threads=16)` against the 20 ms simulator, caching off on both
sides, and prints the two side by side. Fixed output format; not a pass/fail test.

usage: python bench/concurrency_vs_dspy.py [--build build] [--levels 1,16,256,1000,10000]
                                           [--rounds 5]
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on (http://\S+/v1)")


def start_sim(dspyc, *args):
    proc = subprocess.Popen([dspyc, "sim", "--port", "0", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = LISTENING.search(line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("dspyc sim did not start")


def dspy_sched(url, rounds=5):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    lm = dspy.LM("openai/dspyc-sim", api_base=url, api_key="none", cache=False)
    dspy.configure(lm=lm)
    predict = dspy.Predict("question -> answer")
    best = None
    for r in range(rounds + 1):  # the first round warms connections and imports
        pairs = [(predict, dspy.Example(question=f"What is {i + r * 1000} + {i}?")
                  .with_inputs("question")) for i in range(256)]
        t0 = time.perf_counter()
        dspy.Parallel(num_threads=16, disable_progress_bar=True)(pairs)
        ms = (time.perf_counter() - t0) * 1e3
        if r and (best is None or ms < best):
            best = ms
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--levels", default="1,16,256,1000,10000")
    ap.add_argument("--rounds", default="5")
    a = ap.parse_args()
    dspyc = os.path.join(ROOT, a.build, "dspyc")
    bench = os.path.join(ROOT, a.build, "bench_concurrency")
    slow, slow_url = start_sim(dspyc, "--latency-ms", "100")
    fast, fast_url = start_sim(dspyc, "--latency-ms", "20")
    try:
        out = subprocess.run([bench, "--url", slow_url, "--latency-ms", "100", "--levels",
                              a.levels, "--rounds", a.rounds, "--sched-url", fast_url],
                             capture_output=True, text=True, check=True).stdout
        sys.stdout.write(out)
        ours = float(re.search(r"dspyc_sched_ms ([\d.]+)", out).group(1))
        # The same scheduling case with libcurl as the engine's HTTP/1.1 client.
        env = dict(os.environ, DSPYC_HTTP="curl")
        curl = subprocess.run([bench, "--sched-url", fast_url], capture_output=True, text=True,
                              check=True, env=env).stdout
        print("# the same with libcurl as the HTTP/1.1 client (DSPYC_HTTP=curl)")
        sys.stdout.write(curl.replace("dspyc_sched_ms", "dspyc_curl_sched_ms"))
        theirs = dspy_sched(fast_url)
        print("# the same scheduling case through DSPy (dspy.Parallel, num_threads=16)")
        print(f"dspy_sched_ms {theirs:.1f} over_ideal_ms {theirs - 320:.1f}")
        print(f"ratio_dspy_over_dspyc {theirs / ours:.2f} "
              f"overhead_ratio {(theirs - 320) / max(ours - 320, 0.1):.1f}")
    finally:
        for p in (slow, fast):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
