"""Retrieval benchmark, dspyc against its Python peers in the same run.

1. BM25 queries/s: `dspyc index search --queries` (the whole command: process start, index
   open and JSON output included) vs rank_bm25's BM25Okapi get_scores + top-k (numpy
   argsort), on the same synthetic corpus (Zipf-distributed words) and queries, the same
   tokenizer on both sides (docs/retrieve.md). Scores of the first queries are checked equal.
2. RAG program throughput and latency against `dspyc sim` (0 ms per call), cache off:
   retrieve (BM25, k=3) then Predict `passages: list[str], question -> answer`, as a dspyc
   program file under `dspyc run --concurrency C` vs the same program in DSPy
   (dspy.Retrieve over a rank_bm25 retriever as dspy.settings.rm, run with
   dspy.Parallel-style threads: Evaluate's executor at C threads).
3. The same with an LM rank step between them: retrieve k=10, rank (`query, documents ->
   ranked_documents`, the documents' numbers read back), the best 3 to the answer; dspyc's
   {"module": "rank"} step vs a dspy.Predict ranker in the DSPy module (two LM calls a
   record on both sides).
Fixed output format; not a pass/fail test.

DSPy's retriever is rank_bm25 itself (the Python BM25 peer), so its RAG figure includes
rank_bm25's query time; the BM25 line gives that part alone.

usage: python bench/rag_vs_peers.py [--build build] [--docs 20000] [--queries 100]
                                    [--records 200] [--concurrency 16]
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on (http://\S+/v1)")
TOKEN = re.compile(rb"[A-Za-z0-9\x80-\xff]+")


def tokenize(text):
    return [t.lower().decode("utf-8") for t in TOKEN.findall(text.encode("utf-8"))]


def make_corpus(rng, n, vocab=20000):
    words = [f"w{i}" for i in range(vocab)]
    weights = [1.0 / (i + 1) for i in range(vocab)]
    docs = []
    for i in range(n):
        text = " ".join(rng.choices(words, weights, k=rng.randint(20, 80)))
        docs.append({"id": f"d{i}", "title": f"Doc {i}", "text": text})
    return docs, words, weights


def start_sim(dspyc, *args):
    proc = subprocess.Popen([dspyc, "sim", "--port", "0", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = LISTENING.search(line)
        if m:
            return proc, m.group(1)
    raise SystemExit("dspyc sim did not start")


def bench_bm25(dspyc, tmp, docs, queries):
    import numpy as np
    from rank_bm25 import BM25Okapi
    corpus = os.path.join(tmp, "corpus.jsonl")
    with open(corpus, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    t0 = time.perf_counter()
    subprocess.run([dspyc, "index", "build", corpus, "--out", os.path.join(tmp, "idx")],
                   check=True, capture_output=True)
    build_c = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25 = BM25Okapi([tokenize(d["title"] + " " + d["text"]) for d in docs])
    build_py = time.perf_counter() - t0

    # rank_bm25 is slow: time it on the queries given, dspyc on 50x as many (same mix)
    t0 = time.perf_counter()
    py_top = []
    for q in queries:
        s = bm25.get_scores(tokenize(q))
        py_top.append((np.argsort(s)[::-1][:10], s))
    py_s = time.perf_counter() - t0
    many = queries * 50
    qfile = os.path.join(tmp, "queries.txt")
    with open(qfile, "w") as f:
        f.write("".join(q + "\n" for q in many))
    t0 = time.perf_counter()
    r = subprocess.run([dspyc, "index", "search", os.path.join(tmp, "idx"), "-k", "10",
                        "--queries", qfile], check=True, capture_output=True, text=True)
    c_s = time.perf_counter() - t0
    hits = {}
    for line in r.stdout.splitlines():
        h = json.loads(line)
        if h["query"] <= 20:
            hits.setdefault(h["query"], []).append(h)
    same = all(h["score"] == float(py_top[qi - 1][1][h["pid"]])
               for qi, hs in hits.items() for h in hs)
    py_qps, c_qps = len(queries) / py_s, len(many) / c_s
    print(f"BM25 ({len(docs)} passages, top-10): index build dspyc {build_c:.2f} s, "
          f"rank_bm25 {build_py:.2f} s")
    print(f"  dspyc {c_qps:,.0f} queries/s ({len(many)} queries, whole command)  "
          f"rank_bm25 {py_qps:,.1f} queries/s ({len(queries)} queries)  "
          f"ratio {c_qps / py_qps:.0f}x  scores equal: {same}")
    return os.path.join(tmp, "idx"), bm25


def bench_rag(dspyc, tmp, idx, bm25, docs, questions, conc, rank=False):
    import dspy
    proc, url = start_sim(dspyc)
    try:
        prog = os.path.join(tmp, "rag.json")
        steps = [{"module": "retrieve", "k": 10 if rank else 3, "query": "question",
                  "index": idx}]
        if rank:
            steps.append({"module": "rank", "k": 3, "query": "question",
                          "documents": "passages"})
        with open(prog, "w") as f:
            json.dump({"predictors": steps + [
                {"name": "answer", "signature": "passages: list[str], question -> answer"}]}, f)
        inp = os.path.join(tmp, "rag-in.jsonl")
        with open(inp, "w") as f:
            f.write("".join(json.dumps({"question": q}) + "\n" for q in questions))
        out = os.path.join(tmp, "rag-out.jsonl")
        t0 = time.perf_counter()
        r = subprocess.run([dspyc, "run", prog, "--input", inp, "--output", out, "--base-url",
                            url, "--model", "openai/dspyc-sim", "--cache", "off",
                            "--concurrency", str(conc)], capture_output=True, text=True)
        c_s = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        p50 = re.search(r"p50[ =:]+([\d.]+\s*\w+)", r.stderr)

        texts = [f"{d['title']} | {d['text']}" for d in docs]

        def rm(query, k=3, **kw):
            import numpy as np
            s = bm25.get_scores(tokenize(query))
            return [dspy.dsp.utils.dotdict(long_text=texts[i]) for i in np.argsort(s)[::-1][:k]]

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        lm = dspy.LM("openai/dspyc-sim", api_base=url, api_key="sim", cache=False)
        dspy.configure(lm=lm, rm=rm)

        class RAG(dspy.Module):
            def __init__(self):
                self.retrieve = dspy.Retrieve(k=10 if rank else 3)
                self.rank = dspy.Predict("query, documents -> ranked_documents")
                self.answer = dspy.Predict("passages: list[str], question -> answer")

            def forward(self, question):
                passages = self.retrieve(question).passages
                if rank:
                    got = self.rank(query=question, documents=passages).ranked_documents
                    order = [int(n) - 1 for n in re.findall(r"\d+", str(got))
                             if 0 < int(n) <= len(passages)]
                    order = list(dict.fromkeys(order)) + [i for i in range(len(passages))
                                                          if i not in order]
                    passages = [passages[i] for i in order[:3]]
                return self.answer(passages=passages, question=question)

        rag = RAG()
        rag(question=questions[0])  # imports and first call before the clock
        lat = []

        def one(q):
            t = time.perf_counter()
            rag(question=q)
            lat.append(time.perf_counter() - t)

        from concurrent.futures import ThreadPoolExecutor
        t0 = time.perf_counter()
        with ThreadPoolExecutor(conc) as ex:
            list(ex.map(one, questions))
        py_s = time.perf_counter() - t0
        lat.sort()
        n = len(questions)
        what = "BM25 k=10 + LM rank to 3 + Predict" if rank else "BM25 k=3 + Predict"
        print(f"RAG program ({n} records, {what}, sim 0 ms, cache off, "
              f"concurrency {conc}):")
        print(f"  dspyc run {n / c_s:,.0f} records/s (whole command; latency "
              f"{p50.group(0) if p50 else 'n/a'})  DSPy {n / py_s:,.1f} records/s "
              f"(p50 {lat[n // 2] * 1000:.1f} ms, p99 {lat[min(n - 1, n * 99 // 100)] * 1000:.1f} ms)"
              f"  ratio {py_s / c_s:.1f}x")
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    dspyc = os.path.join(a.build, "dspyc")
    rng = random.Random(7)
    docs, words, weights = make_corpus(rng, a.docs)
    queries = [" ".join(rng.choices(words[:5000], k=rng.randint(2, 6))) for _ in range(a.queries)]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with tempfile.TemporaryDirectory() as tmp:
        idx, bm25 = bench_bm25(dspyc, tmp, docs, queries)
        questions = (queries * (a.records // len(queries) + 1))[: a.records]
        bench_rag(dspyc, tmp, idx, bm25, docs, questions, a.concurrency)
        bench_rag(dspyc, tmp, idx, bm25, docs, questions, a.concurrency, rank=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
