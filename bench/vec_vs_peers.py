"""The vec layer beside its peers, in one process and one run (one thread each):

1. matmul: our dspy_vec_matmul (OpenBLAS sgemm) vs numpy's `a @ w.T` (numpy's own OpenBLAS),
   on the shapes the MiniLM encoder runs;
2. exact top-10 over N x 384 float32 (default 1,000,000: 1.5 GB): our scan vs a plain read of
   the same matrix in the same run (the memory-bandwidth bound), vs FAISS IndexFlatIP and
   vs numpy `x @ q` + argpartition;
3. the same search over float16 and int8 storage, against float32.

Figures are printed beside the peer as ratios; nothing passes or fails. Usage:
    python bench/vec_vs_peers.py [--build build] [--rows 1000000] [--queries 5] [--json OUT]
"""
import argparse
import json
import os
import sys
import time

# One thread for every library, and the OpenBLAS kernel it detects itself: a CORETYPE or
# L2 size forced in the environment would pick an older kernel for numpy (this process only).
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import vecffi  # noqa: E402


def race(fns, rounds, args=(None,)):
    """Best wall time of each named call, the contestants interleaved round by round (and
    over `args`, e.g. the queries) so that load from other processes hits them alike."""
    for fn in fns.values():
        fn(args[0])  # warm-up
    t = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for arg in args:
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(arg)
                t[name] = min(t[name], time.perf_counter() - t0)
    return t


def numpy_blas():
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            # Ours is loaded too (libdspyc links Debian's): report the one inside numpy.
            path = p.get("filepath", "")
            if p.get("internal_api") == "openblas" and ("numpy" in path or "scipy" in path):
                return f"{p.get('version')} ({p.get('architecture')}, {p.get('num_threads')} thread)"
    except ImportError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()

    lib = vecffi.load(a.build)
    v = vecffi.Vec(lib, "cpu", threads=1)
    out = {"rows": a.rows, "dim": a.dim, "numpy_openblas": numpy_blas()}
    print(f"numpy {np.__version__}, its OpenBLAS {out['numpy_openblas']}; ours: "
          f"{json.loads(os.popen(os.path.join(a.build, 'dspyc') + ' vec info --json').read())['devices'][0]['blas']}")
    load = os.getloadavg()[0]
    out["load_average"] = load
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores; other processes share "
              "the memory bus, so single figures are noisy (each is the best of interleaved runs)")
    rng = np.random.default_rng(42)

    print("\n== 1. matmul, one thread: ours (dspy_vec_matmul, A @ W^T) vs numpy's a @ w.T")
    out["matmul"] = []
    for m, n, k in ((256, 1536, 384), (256, 384, 1536), (2048, 384, 384), (32, 384, 384)):
        A = rng.standard_normal((m, k), dtype=np.float32)
        W = rng.standard_normal((n, k), dtype=np.float32)
        C = np.empty((m, n), np.float32)
        reps = max(5, int(4e9 / (2 * m * n * k)))
        t = race({"ours": lambda _: v.matmul_bt(A, W, C),
                  "numpy": lambda _: np.matmul(A, W.T, out=C)}, reps)
        t_ours, t_np = t["ours"], t["numpy"]
        g = 2 * m * n * k / 1e9
        ratio = t_np / t_ours
        out["matmul"].append({"m": m, "n": n, "k": k, "ours_gflops": g / t_ours,
                              "numpy_gflops": g / t_np, "ratio": ratio})
        print(f"   {m:5d} x {k:4d} @ ({n:4d} x {k:4d})^T  ours {g / t_ours:7.1f} GFLOP/s   "
              f"numpy {g / t_np:7.1f} GFLOP/s   ours/numpy {ratio:5.2f}x  (target >= 0.95x)")

    print(f"\n== 2. exact top-10 over {a.rows:,} x {a.dim} float32, one query at a time")
    t0 = time.perf_counter()
    X = rng.random((a.rows, a.dim), dtype=np.float32)  # uniform in [-0.5, 0.5): fast to make
    X -= 0.5
    Q = rng.random((a.queries, a.dim), dtype=np.float32) - 0.5
    print(f"   data: {X.nbytes / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
    m = v.matrix(X, vecffi.F32, borrow=True)  # searched in place, the same bytes as the peers'
    s = np.empty((1, 10), np.float32)
    ids = np.empty((1, 10), np.int64)

    def np_search(q):
        sc = X @ q
        top = np.argpartition(-sc, 10)[:10]
        return top[np.argsort(-sc[top])]

    fns = {"read": lambda q: m.read(), "ours": lambda q: m.topk(q, 10, scores=s, ids=ids),
           "numpy": np_search}
    index = None
    try:
        import faiss
        faiss.omp_set_num_threads(1)
        index = faiss.IndexFlatIP(a.dim)
        index.add(X)
        fns["faiss"] = lambda q: index.search(q.reshape(1, -1), 10)
    except ImportError:
        print("   FAISS: not installed (pip install faiss-cpu)")
    t = race(fns, 4, list(Q))
    ours_ids = [m.topk(q, 10)[1][0] for q in Q]
    t_read, t_f32, t_np = t["read"], t["ours"], t["numpy"]
    bw = X.nbytes / t_read / 1e9
    res = {"plain_read_gbps": bw, "plain_read_ms": t_read * 1e3, "ours_f32_ms": t_f32 * 1e3,
           "ours_f32_gbps": X.nbytes / t_f32 / 1e9, "numpy_ms": t_np * 1e3}
    print(f"   plain read of the matrix (ours):  {t_read * 1e3:8.1f} ms  {bw:6.1f} GB/s")
    print(f"   ours, float32:                    {t_f32 * 1e3:8.1f} ms  "
          f"{X.nbytes / t_f32 / 1e9:6.1f} GB/s = {t_read / t_f32 * 100:5.1f} % of the plain read"
          f" (target >= 80 %)")
    print(f"   numpy x @ q + argpartition:       {t_np * 1e3:8.1f} ms   ours is {t_np / t_f32:5.2f}x faster")
    if index is not None:
        fa_ids = [index.search(q.reshape(1, -1), 10)[1][0] for q in Q]
        same = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ours_ids, fa_ids)])
        t_faiss = t["faiss"]
        res.update(faiss_ms=t_faiss * 1e3, faiss_version=faiss.__version__, same_ids=same)
        print(f"   FAISS {faiss.__version__} IndexFlatIP:       {t_faiss * 1e3:8.1f} ms   ours is "
              f"{t_faiss / t_f32:5.2f}x faster (target > 1x); same top-10 ids: {same * 100:.0f} %")
        del index, fns
    out["search"] = res

    print("\n== 3. the same search over smaller storage (ours), against float32")
    for name, st in (("float16", vecffi.F16), ("int8", vecffi.I8)):
        mm = v.matrix(X, st)
        t = race({"f32": lambda q: m.topk(q, 10, scores=s, ids=ids),
                  name: lambda q: mm.topk(q, 10, scores=s, ids=ids)}, 4, list(Q))
        got = [mm.topk(q, 10)[1][0] for q in Q]
        recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ours_ids, got)])
        gb = mm.nbytes / t[name] / 1e9
        mm.close()
        res[f"ours_{name}_ms"] = t[name] * 1e3
        res[f"ours_{name}_vs_f32"] = t["f32"] / t[name]
        res[f"ours_{name}_recall10"] = recall
        target = "  (target >= 3x)" if name == "int8" else ""
        print(f"   {name:8s} {t[name] * 1e3:8.1f} ms  {gb:6.1f} GB/s  {t['f32'] / t[name]:5.2f}x "
              f"float32's speed (same run: {t['f32'] * 1e3:.1f} ms){target}; recall@10 vs "
              f"float32 {recall * 100:.0f} %")
    m.close()
    v.close()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"\n   every figure: {a.json}")


if __name__ == "__main__":
    main()
