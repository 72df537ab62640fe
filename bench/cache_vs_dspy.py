"""Cache hit latency end to end through a module call, dspyc against Python DSPy in the same
run.

dspyc: bench_cache_hit times dspy_module_call() on a Predict module whose LM's cache holds
the answer in exactly one level: L1 memory, L2 Redis (a redis-server started here on a
loopback port), L3 disk (LMDB in a temporary directory).
DSPy: dspy.Predict over dspy.LM(cache=True) against the dspyc simulator, warmed with one call
(which goes to the simulator, through litellm up to DSPy 3.3 and through DSPy's own HTTP
transport from 3.4 on, and fills the cache), then timed; once with
dspy.configure_cache(memory only) and once with (disk only, a temporary directory).
Both sides run the same signature and question; every timed call is a cache hit.

usage: python bench/cache_vs_dspy.py [--build build] [--iterations N] [--slow-iterations N]
                                     [--dspy-iterations N] [--json]
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
import time

QUESTION = "What is the capital of France?"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    binary = shutil.which("redis-server")
    if not binary:
        return None, None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.025)
    proc.kill()
    return None, None


def start_sim(dspyc):
    proc = subprocess.Popen([dspyc, "sim", "--port", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on (http://\S+/v1)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("dspyc sim did not start")


def time_dspy(module, iterations):
    module(question=QUESTION)  # the miss that fills the cache
    for _ in range(20):
        module(question=QUESTION)
    t0 = time.perf_counter()
    for _ in range(iterations):
        module(question=QUESTION)
    return (time.perf_counter() - t0) / iterations * 1e9


def measure_dspy(base_url, iterations, tmp):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    lm = dspy.LM("openai/dspyc-sim", api_base=base_url, api_key="sim", cache=True)
    dspy.configure(lm=lm)
    out = {}
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    out["memory"] = time_dspy(dspy.Predict("question -> answer"), iterations)
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=False,
                         disk_cache_dir=os.path.join(tmp, "dspy_cache"))
    out["disk"] = time_dspy(dspy.Predict("question -> answer"), max(iterations // 2, 1))
    if len(lm.history) < 2 or any(not h.get("response") for h in lm.history[-2:]):
        raise RuntimeError("DSPy's calls did not complete")
    return out, dspy.__version__


def dspy_way(version):
    """How DSPy reached the simulator for the miss that filled its cache."""
    major, minor = (int(x) for x in version.split(".")[:2])
    return ("its own HTTP transport to the dspyc simulator on loopback" if (major, minor) >= (3, 4)
            else "litellm over HTTP to the dspyc simulator on loopback")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.environ.get("DSPYC_BUILD", "build"))
    ap.add_argument("--iterations", type=int, default=1000000, help="dspyc L1 hits")
    ap.add_argument("--slow-iterations", type=int, default=5000,
                    help="dspyc L2 hits (L3: 4x)")
    ap.add_argument("--dspy-iterations", type=int, default=2000,
                    help="DSPy memory hits (disk: half)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    dspyc = os.path.join(args.build, "dspyc")

    redis, url = start_redis()
    sim, base = start_sim(dspyc)
    tmp = tempfile.mkdtemp(prefix="dspyc-cache-bench-")
    try:
        cmd = [os.path.join(args.build, "bench_cache_hit"), "--json", "--iterations",
               str(args.iterations), "--slow-iterations", str(args.slow_iterations), "--dir",
               os.path.join(tmp, "l3")]
        if url:
            cmd += ["--redis-url", url]
        os.makedirs(os.path.join(tmp, "l3"))
        ours = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                         text=True).stdout)
        theirs, version = measure_dspy(base, args.dspy_iterations, tmp)
    finally:
        sim.terminate()
        sim.wait()
        if redis:
            redis.kill()
            redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    dspy_mem = theirs["memory"]
    rows = [("L1 memory hit", ours.get("l1_wall_ns"), ours.get("l1_cpu_ns")),
            ("L2 Redis hit", ours.get("l2_wall_ns"), ours.get("l2_cpu_ns")),
            ("L3 disk hit", ours.get("l3_wall_ns"), ours.get("l3_cpu_ns")),
            ("no cache (canned LM)", ours.get("uncached_wall_ns"), ours.get("uncached_cpu_ns"))]
    if args.json:
        print(json.dumps({"dspyc": ours, "dspy": theirs, "dspy_version": version,
                          "dspy_transport": dspy_way(version)}))
        return 0
    print(f"cache hit through a module call (Predict 'question -> answer'): dspyc vs DSPy "
          f"{version}")
    print(f"  dspyc: dspy_module_call with the answer in one cache level; DSPy {version}: "
          f"dspy.LM(cache=True), {dspy_way(version)}; every timed call is a hit")
    print(f"  {'dspyc':<22} {'wall us':>9} {'CPU us':>9}   {'DSPy memory hit / this':>22}")
    for name, wall, cpu in rows:
        if wall is None:
            print(f"  {name:<22} {'-':>9} {'-':>9}   (no redis-server)")
            continue
        print(f"  {name:<22} {wall / 1e3:>9.3f} {cpu / 1e3:>9.3f}   {dspy_mem / wall:>21.0f}x")
    print(f"  {'DSPy':<22} {'wall us':>9}")
    print(f"  {'memory hit':<22} {dspy_mem / 1e3:>9.1f}")
    print(f"  {'disk hit':<22} {theirs['disk'] / 1e3:>9.1f}")
    l1, l3 = ours["l1_wall_ns"], ours["l3_wall_ns"]
    print(f"  ratios: DSPy memory / dspyc L1 = {dspy_mem / l1:.0f}x, "
          f"DSPy disk / dspyc L3 = {theirs['disk'] / l3:.0f}x")
    print("  target: dspyc L1 hit <= 1 us, >= 100x faster than DSPy's memory hit "
          "(DSPy docs: 0.53 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
