#!/usr/bin/env bash
# Format the tracked C sources with .clang-format: `scripts/format.sh` rewrites them in place,
# `scripts/format.sh --check` changes nothing, lists the files that differ and fails if any do.
# Generated tables (made by scripts/gen_*.py) and fuzz corpora are left out.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: scripts/format.sh [--check]" >&2; exit 2 ;;
esac

cf=${CLANG_FORMAT:-clang-format}
command -v "$cf" >/dev/null || { echo "format: $cf not found (scripts/setup.sh installs it)" >&2; exit 2; }

# The tracked files; outside a git checkout (a release tarball), the same folders' files.
list() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -- 'src/*.[ch]' 'cli/*.[ch]' 'include/*.h' 'tests/*.[ch]' 'bench/*.[ch]'
    else
        find src cli include tests bench -type f \( -name '*.c' -o -name '*.h' \) | sort
    fi
}
mapfile -t files < <(list | grep -v -e '^tests/fuzz/corpus/' \
                                    -e '^src/base/unicode_ident\.c$' -e '^src/vec/wordpiece_tables\.c$' \
                                    -e '^src/retrieve/bpe_tables\.c$')
[ ${#files[@]} -gt 0 ] || exit 0

if [ $check -eq 0 ]; then
    printf '%s\0' "${files[@]}" | xargs -0 -n 32 "$cf" -i --style=file
    exit 0
fi

# One clang-format run over every file; --dry-run reports each difference as
# "FILE:LINE:COL: error: code should be clang-formatted".
out=$(printf '%s\0' "${files[@]}" | xargs -0 "$cf" --dry-run --Werror --style=file 2>&1) && exit 0
bad=$(printf '%s\n' "$out" | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' | sort -u)
if [ -z "$bad" ]; then
    printf '%s\n' "$out" >&2
    exit 2
fi
printf 'format: %s differs from .clang-format\n' $bad
echo "format: $(printf '%s\n' $bad | wc -l) of ${#files[@]} files need formatting: run make format" >&2
exit 1
