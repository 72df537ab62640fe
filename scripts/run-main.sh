#!/usr/bin/env bash
# The main job behind `make run`: the benchmark suite against the built-in simulator, with
# each peer (Python DSPy, wrk, k6 when present) measured beside dspyc in the same run.
# Figures go to the terminal and out/.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
# Peers are measured with the newest DSPy (.venv-dspy34, made by scripts/setup.sh).
py=.venv-dspy34/bin/python
[ -x "$py" ] || { echo "run-main: $py is missing: run scripts/setup.sh" >&2; exit 2; }
mkdir -p out

step() { printf '\n== %s\n' "$*"; }

step "1. a program over a dataset: arithmetic word problems, ChainOfThought, built-in simulator"
"$build/dspyc" run examples/arith/program.json --input examples/arith/dev.jsonl \
    --output out/arith-predictions.jsonl --score answer --cache off || true

step "2. dspyc bench: Predict vs ChainOfThought at 20 ms per call, and the same Predict in" \
     "Python DSPy through embedded CPython"
VIRTUAL_ENV="$PWD/.venv-dspy34" "$build/dspyc" bench --sim '--latency-ms 20' --iterations "${ITERATIONS:-200}" \
    --concurrency 16 --python examples.python.qa:qa --json out/bench.json
echo "   every figure: out/bench.json"

step "3. framework overhead per call, dspyc vs Python DSPy (canned LM: DSPy 3.4 through its" \
     "own HTTP transport against a canned loopback server)"
$py bench/overhead_vs_dspy.py --build "$build"

step "4. cache hits through a module call, dspyc (memory, Redis, disk) vs Python DSPy"
$py bench/cache_vs_dspy.py --build "$build"

step "5. concurrency: throughput vs calls in flight, and 256 x 20 ms at 16 vs Python DSPy"
$py bench/concurrency_vs_dspy.py --build "$build"

step "5b. the HTTP client engine: CPU per request, memory per request in flight and 256 x 20 ms" \
     "at 16, libcurl vs the engine's own HTTP/1.1 client in the same run"
"$build/bench_engine" --levels 1,16,256,1000 --rounds 10
$py bench/inflight_clients.py --build "$build"

step "6. dspyc run streams: peak memory for 1,000 vs 1,000,000 input lines"
$py bench/run_memory.py --build "$build"

step "7. load generator: dspyc loadtest vs wrk (and k6 when installed), per generator core"
$py bench/loadgen_compare.py --build "$build"

step "8. proxy: dspyc serve's added latency over direct-to-sim (miss and hit, 1k/5k/10k req/s)" \
     "vs LiteLLM's proxy on the same workload"
$py bench/serve_vs_litellm.py --build "$build" | tee out/serve_vs_litellm.txt

step "9. optimizers: BootstrapFewShot, MIPROv2 light and GEPA light, dspyc vs Python DSPy, 0 and 100 ms per call"
$py bench/optimize_vs_dspy.py --build "$build"
step "10. vector kernels: matmul vs numpy, exact top-10 over 1M x 384 vs the plain read, FAISS" \
     "and numpy; int8/float16 storage vs float32 (one thread each)"
$py bench/vec_vs_peers.py --build "$build"
step "11. embeddings: dspyc's C all-MiniLM-L6-v2 vs onnxruntime (same model as ONNX, when" \
     "models/all-MiniLM-L6-v2/model.onnx exists) and sentence-transformers (when ST_PYTHON" \
     "names a Python that has it), one thread each, batch 1 and 32"
$py bench/embed_vs_peers.py --bench "$build/bench_embed" --seconds 2 --rounds 1 \
    ${ST_PYTHON:+--st-python "$ST_PYTHON"}

step "12. jobs: dspyc serve --jobs, no-op and small optimization jobs vs 1/2/4/8 workers," \
     "and Celery's no-op task on the same Redis"
$py bench/jobs_vs_celery.py --build "$build" | tee out/jobs_vs_celery.txt

step "13. retrieval: BM25 queries/s vs rank_bm25, and a RAG program (retrieve + Predict) vs" \
     "the same program in Python DSPy against the simulator"
$py bench/rag_vs_peers.py --build "$build" 2>/dev/null | tee out/rag_vs_peers.txt
step "14. tokenization: BPE MB/s (cl100k_base, o200k_base) vs tiktoken on the same texts," \
     "one thread each"
$py bench/tokens_vs_tiktoken.py --build "$build" | tee out/tokens_vs_tiktoken.txt
step "15. semantic cache: hit and false-hit rates (Wilson 95 %) over examples/semantic/pairs.jsonl" \
     "at several thresholds vs cosine alone, lookup latency at 10k and 1M entries (exact scan)," \
     "the HNSW index at 10k and 100k vs FAISS IndexHNSWFlat"
"$build/bench_semantic_cache" --pairs examples/semantic/pairs.jsonl
# the HNSW index of large partitions beside FAISS's (10k and 100k here; 1M takes many
# minutes on two cores: bench_semantic_cache --index-sizes 1000000 and
# semantic_index_vs_faiss.py --sizes 1000000, measured once, figures in docs/semantic-cache.md)
$py bench/semantic_index_vs_faiss.py --sizes 10000,100000

step "16. cache levels per operation, and dspyc run's batch over a warm Redis-only cache:" \
     "one pipelined MGET per run of records vs one GET per record (the same binary)"
"$build/bench_cache" | tee out/bench_cache.txt
