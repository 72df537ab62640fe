#!/usr/bin/env python3
"""all-MiniLM-L6-v2 embedding throughput on one core: dspyc's C embedder (build/bench_embed)
beside onnxruntime (the same model exported to ONNX) and sentence-transformers (torch, CPU),
on the same short sentences, at batch 1 and 32, every peer pinned to one thread, in the same
run. Prints sentences/s (wall clock) and CPU milliseconds per sentence for each, then dspyc's
ratio to each peer. A peer that is not available is reported as such and skipped:
  - onnxruntime: `pip install onnxruntime` (tests/requirements.txt) and an ONNX file, made
    once by bench/export_minilm_onnx.py (needs torch) as models/all-MiniLM-L6-v2/model.onnx;
  - sentence-transformers: lives in a throwaway venv (its torch wheel is 5.8 GB); name its
    Python with --st-python.
Rounds are interleaved and the best round of each is kept (the machine may be shared).
Not a pass/fail test.

usage: python bench/embed_vs_peers.py [--bench build/bench_embed] [--model DIR]
           [--st-python ~/st-venv/bin/python] [--batches 1,32] [--seconds 3] [--rounds 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = [
    "How do I cancel my subscription?",
    "What is the capital of France?",
    "Track my order 48213 please",
    "Is ibuprofen safe with alcohol?",
    "The weather is lovely today.",
    "Where can I find the invoice for May?",
    "Reset my password, I forgot it",
    "Which plan includes priority support?",
]

# The peers' timing loop, shared so both measure alike: warm-up, then batches for `seconds`.
TIMER = r'''
import json, os, sys, time
def measure(impl, fn, texts, batch, seconds):
    n = len(texts)
    pick = lambda start: [texts[(start + k) % n] for k in range(batch)]
    for w in range(3):
        fn(pick(w * batch))
    rounds, ms, nxt = 0, [], 0
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds or rounds < 3:
        b = pick(nxt); nxt += batch
        a = time.perf_counter(); fn(b); ms.append((time.perf_counter() - a) * 1e3)
        rounds += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ms.sort()
    return {"impl": impl, "batch": batch, "threads": 1, "sentences": rounds * batch,
            "sentences_per_s": rounds * batch / wall, "ms_per_batch_p50": ms[len(ms) // 2],
            "cpu_ms_per_sentence": cpu * 1e3 / (rounds * batch)}
'''

ST_SCRIPT = TIMER + r'''
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)
from sentence_transformers import SentenceTransformer
model_dir, texts, batches, seconds = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4])
m = SentenceTransformer(model_dir, device="cpu")
for b in map(int, batches.split(",")):
    fn = lambda t: m.encode(t, batch_size=len(t), normalize_embeddings=True, convert_to_numpy=True)
    print(json.dumps(measure("sentence-transformers", fn, texts, b, seconds)), flush=True)
'''


def run_dspyc(args, texts_file):
    out = subprocess.run([args.bench, "--texts", texts_file, "--batch", args.batches,
                          "--threads", "1", "--seconds", str(args.seconds)]
                         + (["--model", args.model] if args.model else []),
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        sys.exit(f"bench_embed failed: {out.stderr.strip()}")
    return [json.loads(l) for l in out.stdout.splitlines()]


def ort_session(model_dir):
    try:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        return None, f"onnxruntime skipped (not importable: {e.name})"
    path = os.path.join(model_dir, "model.onnx")
    if not os.path.exists(path):
        return None, f"onnxruntime skipped (no {path}; make it with bench/export_minilm_onnx.py)"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(256)  # sentence-transformers' max_seq_length, not the file's 128
    tok.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(texts):
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        h = sess.run(None, {"input_ids": ids, "attention_mask": mask,
                            "token_type_ids": np.zeros_like(ids)})[0]
        m = mask[:, :, None].astype(np.float32)
        v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)

    return embed, f"onnxruntime {ort.__version__}"


def run_ort(embed, args):
    ns = {}
    exec(TIMER, ns)
    return [ns["measure"]("onnxruntime", embed, SENTENCES, int(b), args.seconds)
            for b in args.batches.split(",")]


def run_st(args, model_dir):
    out = subprocess.run([args.st_python, "-c", ST_SCRIPT, model_dir, json.dumps(SENTENCES),
                          args.batches, str(args.seconds)],
                         capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                                  TOKENIZERS_PARALLELISM="false"))
    if out.returncode:
        print(f"sentence-transformers failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def best(rows_by_round):
    """Per batch size, the round with the most sentences/s."""
    out = {}
    for rows in rows_by_round:
        for r in rows:
            if r["batch"] not in out or r["sentences_per_s"] > out[r["batch"]]["sentences_per_s"]:
                out[r["batch"]] = r
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench_embed"))
    ap.add_argument("--model", default=os.environ.get("DSPYC_EMBED_MODEL")
                    or os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--st-python", help="Python of a venv with sentence-transformers")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(SENTENCES) + "\n")
        texts_file = f.name
    ort_embed, ort_note = ort_session(args.model)
    st_note = "skipped (no --st-python)" if not args.st_python else "sentence-transformers"
    results = {"dspyc": [], "onnxruntime": [], "sentence-transformers": []}
    for _ in range(args.rounds):
        results["dspyc"].append(run_dspyc(args, texts_file))
        if ort_embed:
            results["onnxruntime"].append(run_ort(ort_embed, args))
        if args.st_python:
            rows = run_st(args, args.model)
            if rows:
                results["sentence-transformers"].append(rows)
    os.unlink(texts_file)
    print(f"all-MiniLM-L6-v2, one thread each, {len(SENTENCES)} short sentences "
          f"(8-11 word pieces), best of {args.rounds} interleaved rounds of {args.seconds:g} s")
    print(f"peers: {ort_note}; sentence-transformers: {st_note}")
    table = {k: best(v) for k, v in results.items() if v}
    print(f"{'impl':<24}{'batch':>6}{'sentences/s':>14}{'ms/batch p50':>14}{'CPU ms/sentence':>17}")
    for impl, rows in table.items():
        for b, r in sorted(rows.items()):
            print(f"{impl:<24}{b:>6}{r['sentences_per_s']:>14.1f}{r['ms_per_batch_p50']:>14.2f}"
                  f"{r['cpu_ms_per_sentence']:>17.2f}")
    for peer in ("onnxruntime", "sentence-transformers"):
        if peer not in table:
            continue
        for b, r in sorted(table["dspyc"].items()):
            p = table[peer].get(b)
            if p:
                print(f"dspyc vs {peer}, batch {b}: {r['sentences_per_s'] / p['sentences_per_s']:.2f}x "
                      f"sentences/s, {p['cpu_ms_per_sentence'] / r['cpu_ms_per_sentence']:.2f}x "
                      f"less CPU per sentence")
    print(json.dumps({"results": table}, default=str))


if __name__ == "__main__":
    main()
