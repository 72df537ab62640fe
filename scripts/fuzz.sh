#!/usr/bin/env bash
# Fuzz every target for a fixed time, then merge what it found, minimized, into its corpus
# (tests/fuzz/corpus/<name>/, which the fuzz-smoke tests replay). Usage: scripts/fuzz.sh
# BUILD_DIR SECONDS [TARGET...]; BUILD_DIR holds a -DDSPYC_FUZZ=ON build. A crash stops the
# run with libFuzzer's report and the crashing input saved as BUILD_DIR/crash-*.
set -euo pipefail
dir=$(cd "$1" && pwd)
secs=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$root"/tests/fuzz/fuzz_*.c; do
        targets+=("$(basename "$f" .c)")
    done
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
for t in "${targets[@]}"; do
    name=${t#fuzz_}
    corpus=$root/tests/fuzz/corpus/$name
    bin=$dir/fuzz_$name
    [ -x "$bin" ] || { echo "fuzz: $bin is not built (-DDSPYC_FUZZ=ON)"; exit 2; }
    mkdir -p "$corpus"
    found=$(mktemp -d)
    echo "== fuzz_$name for ${secs}s ($(ls "$corpus" | wc -l) inputs)"
    log=$(mktemp)
    if ! (cd "$dir" && "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 \
              -rss_limit_mb=2048 "$found" "$corpus" >"$log" 2>&1); then
        cat "$log"
        rm -f "$log"
        echo "fuzz: fuzz_$name failed; the input is in $dir"
        exit 1
    fi
    grep -E '^#[0-9]+.*DONE' "$log" | tail -1
    rm -f "$log"
    # Into the corpus go only the found inputs that reach code (edges) it does not reach yet,
    # the smallest input for each: hit-count features would keep thousands of near-copies.
    "$bin" -merge=1 -use_counters=0 "$corpus" "$found" >/dev/null 2>&1
    rm -rf "$found"
    echo "   corpus now $(ls "$corpus" | wc -l) inputs"
done
