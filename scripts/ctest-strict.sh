#!/usr/bin/env bash
# Run ctest in build folder $1 with the remaining arguments, and fail when any test was
# skipped: on a set-up machine (make test installs Redis, Python, ...) every test must run.
set -uo pipefail
dir=$1
shift
log=$(mktemp)
(cd "$dir" && ctest "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ] && grep -qE '\(Skipped\)|\*\*\*Skipped|Not Run' "$log"; then
    echo "ctest-strict: some tests were skipped; make test requires every test to run"
    rc=1
fi
rm -f "$log"
exit "$rc"
