"""`dspyc run` streams its input: peak memory must not depend on how many lines there are.

Runs the same program over 1,000 and over 1,000,000 (or --lines) input lines against the
built-in simulator with the cache off, and prints each run's peak resident memory (the
child's ru_maxrss from wait4) and throughput.

usage: python bench/run_memory.py [--build build] [--lines 1000,1000000] [--concurrency N]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def make_input(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write('{"question": "What is %d + %d?"}\n' % (i, i % 97))


def run_once(dspyc, inp, extra):
    args = [dspyc, "run", "--signature", "question -> answer", "--cache", "off", "--quiet",
            "--input", inp, "--output", os.devnull, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"dspyc run failed ({code}): {err}")
    return usage.ru_maxrss * 1024, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.environ.get("DSPYC_BUILD", "build"))
    ap.add_argument("--lines", default="1000,1000000")
    ap.add_argument("--concurrency", type=int, default=0,
                    help="pass --concurrency N to dspyc run (0: its default)")
    args = ap.parse_args()
    dspyc = os.path.join(args.build, "dspyc")
    extra = ["--concurrency", str(args.concurrency)] if args.concurrency else []
    counts = [int(x) for x in args.lines.split(",")]
    print("dspyc run: peak memory by input size (built-in simulator, cache off)")
    print(f"  {'lines':>10} {'peak RSS MiB':>13} {'seconds':>9} {'records/s':>10}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            inp = os.path.join(tmp, f"in-{n}.jsonl")
            make_input(inp, n)
            rss, secs = run_once(dspyc, inp, extra)
            os.unlink(inp)
            rows.append((n, rss))
            print(f"  {n:>10} {rss / 1048576:>13.1f} {secs:>9.1f} {n / secs:>10.0f}")
    if len(rows) > 1:
        (n0, a), (n1, b) = rows[0], rows[-1]
        print(f"  peak RSS at {n1:,} lines is {b / a:.2f}x the peak at {n0:,} lines "
              f"({n1 // n0:,}x the input)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
