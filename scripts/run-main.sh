#!/usr/bin/env bash
# The main job behind `make run`: the benchmark suite against the built-in simulator, with
# Python DSPy measured beside dspyc in the same run. Figures go to the terminal and out/.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
mkdir -p out

echo "== 1. a program over a dataset: arithmetic word problems, ChainOfThought, built-in simulator"
"$build/dspyc" run examples/arith/program.json --input examples/arith/dev.jsonl \
    --output out/arith-predictions.jsonl --score answer --cache off || true
echo "   predictions: out/arith-predictions.jsonl"

echo
echo "== 2. dspyc bench: Predict vs ChainOfThought, simulator at 20 ms per call,"
echo "      and the same Predict in Python DSPy through embedded CPython"
"$build/dspyc" bench --sim '--latency-ms 20' --iterations "${ITERATIONS:-200}" \
    --concurrency 16 --python examples.python.qa:qa --json out/bench.json
echo "   every figure: out/bench.json"

echo
echo "== 3. framework overhead per call, dspyc vs Python DSPy (canned LM, same run)"
.venv/bin/python bench/overhead_vs_dspy.py --build "$build"
