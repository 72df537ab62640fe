"""The peer of bench_semantic_cache's HNSW section: FAISS's IndexHNSWFlat with the same
parameters the semantic level uses (M 16, efConstruction 100, inner product, one thread),
over N unit vectors of 384 dimensions, clustered (N/100 random topic centres, each vector
at cosine ~0.75 to its own) or uniformly random, as the C bench (numpy's generator: the
same distribution, not the same numbers). Per size: build time per insert; per efSearch: search
latency p50 / p99 of one query with k = 4 for near-duplicate queries (a stored vector plus
noise, cosine about 0.9), how many found their vector, and recall@10 against the exact
scan for random queries. Figures beside ours in make run; nothing passes or fails.

    python bench/semantic_index_vs_faiss.py [--sizes 10000,100000] [--ef-search 16,32,64,128]
                                            [--data clustered|random] [--ef-construction 100]
"""
import argparse
import os
import time

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

try:
    import faiss  # noqa: E402
except ImportError:  # pragma: no cover - faiss-cpu is in tests/requirements-common.txt
    faiss = None

DIM = 384


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def near(x, cos, rng):
    """Each row of x plus noise, at cosine about `cos` to it."""
    noise = unit(rng.standard_normal(x.shape))
    return unit(x + np.sqrt(1 / (cos * cos) - 1) * noise)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--ef-search", default="16,32,64,128")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", choices=("clustered", "random"), default="clustered")
    ap.add_argument("--ef-construction", type=int, default=100)
    a = ap.parse_args()
    if faiss is None:
        print("FAISS peer: faiss-cpu is not installed (pip install -r tests/requirements-common.txt)")
        return 1
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(777)
    print("peer in this run: FAISS %s IndexHNSWFlat (M 16, efConstruction %d, inner product, "
          "one thread; k = 4):" % (faiss.__version__, a.ef_construction))
    for n in [int(s) for s in a.sizes.split(",") if s]:
        if a.data == "clustered":
            c = unit(rng.standard_normal((max(n // 100, 1), DIM)))
            x = near(c[rng.integers(0, len(c), n)], 0.75, rng)
        else:
            x = unit(rng.standard_normal((n, DIM)))
        idx = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = a.ef_construction
        t, c = time.perf_counter(), time.thread_time()
        idx.add(x)
        build, cpu = time.perf_counter() - t, time.thread_time() - c
        print("  %d %s vectors: build %.1f s, %.0f us per insert (%.0f us of CPU)"
              % (n, a.data, build, build / n * 1e6, cpu / n * 1e6))
        planted = rng.integers(0, n, a.queries)
        q = near(x[planted], 0.9, rng)
        nr = 20 if n >= 500000 else 100
        qr = unit(rng.standard_normal((nr, DIM)))
        exact = np.argsort(-(qr @ x.T), axis=1)[:, :10]
        for ef in [int(s) for s in a.ef_search.split(",") if s]:
            idx.hnsw.efSearch = ef
            lat, cpu, found = [], [], 0
            for i in range(a.queries):
                t, c = time.perf_counter(), time.thread_time()
                _, ids = idx.search(q[i:i + 1], 4)
                lat.append((time.perf_counter() - t) * 1e3)
                cpu.append((time.thread_time() - c) * 1e3)
                found += int(planted[i] in ids[0])
            _, ids = idx.search(qr, 10)
            rec = np.mean([len(set(ids[i]) & set(exact[i])) / 10 for i in range(nr)])
            print("    efSearch %3d: search p50 %.3f ms p99 %.3f ms wall, %.3f / %.3f ms of CPU; "
                  "near-duplicate found %d/%d; random queries recall@10 vs exact %.3f"
                  % (ef, np.percentile(lat, 50), np.percentile(lat, 99), np.percentile(cpu, 50),
                     np.percentile(cpu, 99), found, a.queries, rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
