#!/usr/bin/env bash
# The main job behind `make run`: a bundled program over a bundled dataset against the
# built-in simulator, then the framework-overhead benchmark against Python DSPy.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
mkdir -p out

echo "== dspyc run: arithmetic word problems (examples/arith), ChainOfThought, built-in simulator"
"$build/dspyc" run examples/arith/program.json --input examples/arith/dev.jsonl \
    --output out/arith-predictions.jsonl || true
echo "   predictions: out/arith-predictions.jsonl"
echo
echo "== framework overhead per call, dspyc vs Python DSPy (same run)"
.venv/bin/python bench/overhead_vs_dspy.py --build "$build"
