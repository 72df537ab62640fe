#!/usr/bin/env bash
# The main job behind `make run`: the benchmark suite against the built-in simulator, with
# each peer (Python DSPy, wrk, k6 when present) measured beside dspyc in the same run.
# Figures go to the terminal and out/.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
py=.venv/bin/python
mkdir -p out

step() { printf '\n== %s\n' "$*"; }

step "1. a program over a dataset: arithmetic word problems, ChainOfThought, built-in simulator"
"$build/dspyc" run examples/arith/program.json --input examples/arith/dev.jsonl \
    --output out/arith-predictions.jsonl --score answer --cache off || true

step "2. dspyc bench: Predict vs ChainOfThought at 20 ms per call, and the same Predict in" \
     "Python DSPy through embedded CPython"
"$build/dspyc" bench --sim '--latency-ms 20' --iterations "${ITERATIONS:-200}" \
    --concurrency 16 --python examples.python.qa:qa --json out/bench.json
echo "   every figure: out/bench.json"

step "3. framework overhead per call, dspyc vs Python DSPy (canned LM, no network)"
$py bench/overhead_vs_dspy.py --build "$build"

step "4. cache hits through a module call, dspyc (memory, Redis, disk) vs Python DSPy"
$py bench/cache_vs_dspy.py --build "$build"

step "5. concurrency: throughput vs calls in flight, and 256 x 20 ms at 16 vs Python DSPy"
$py bench/concurrency_vs_dspy.py --build "$build"

step "6. dspyc run streams: peak memory for 1,000 vs 1,000,000 input lines"
$py bench/run_memory.py --build "$build"

step "7. load generator: dspyc loadtest vs wrk (and k6 when installed), per generator core"
$py bench/loadgen_compare.py --build "$build"

step "8. proxy: dspyc serve's added latency over direct-to-sim (miss and hit, 1k/5k/10k req/s)" \
     "vs LiteLLM's proxy on the same workload"
$py bench/serve_vs_litellm.py --build "$build" | tee out/serve_vs_litellm.txt

step "9. optimizers: BootstrapFewShot, MIPROv2 light and GEPA light, dspyc vs Python DSPy, 0 and 100 ms per call"
$py bench/optimize_vs_dspy.py --build "$build"

step "10. retrieval: BM25 queries/s vs rank_bm25, and a RAG program (retrieve + Predict) vs" \
     "the same program in Python DSPy against the simulator"
$py bench/rag_vs_peers.py --build "$build" 2>/dev/null | tee out/rag_vs_peers.txt
