"""BPE tokenization throughput, dspyc against tiktoken (PyPI) in the same run: MB/s of
encoding the same text to ids, one thread each (bench_tokens' dspy_tokenizer_encode vs
tiktoken's encode_ordinary), the best of R rounds after a warm-up, for cl100k_base and
o200k_base. tiktoken is built from the same rank files (it cannot download them here) with
its own split patterns. Token counts are checked equal. Fixed output format; not a
pass/fail test.

Texts (each about --mb MB, repeated from its source): "docs", this repository's Markdown
(English prose with code); "code", its C sources; "multilingual", sentences in a dozen
scripts with emoji and numbers.

usage: python bench/tokens_vs_tiktoken.py [--build build] [--mb 4] [--rounds 5]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import tiktoken_oracle  # noqa: E402
MULTI = [
    "The quick brown fox jumps over the lazy dog; it's 12:45 and we'll leave at 3.",
    "東京は日本の首都で、人口は約1400万人です。", "北京是中华人民共和国的首都。",
    "서울은 대한민국의 수도입니다.", "Москва — столица России, в ней 13 млн жителей.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.", "ירושלים היא בירת ישראל.",
    "नई दिल्ली भारत की राजधानी है।", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "Ça coûte 15,50 € — très cher ! 👍🏽🎉",
    "Zürich, Genève und Lausanne liegen in der Schweiz. ÄÖÜäöüß",
]


def texts(mb):
    want = int(mb * 1e6)
    docs = "".join(open(p, encoding="utf-8").read() + "\n" for p in
                   sorted([os.path.join(ROOT, "README.md")] +
                          glob.glob(os.path.join(ROOT, "docs", "*.md"))))
    code = "".join(open(p, encoding="utf-8").read() for p in
                   sorted(glob.glob(os.path.join(ROOT, "src", "*", "*.c")))
                   if not p.endswith("_tables.c") and not p.endswith("unicode_ident.c"))
    multi = " ".join(MULTI) + "\n"
    out = {}
    for name, src in [("docs", docs), ("code", code), ("multilingual", multi)]:
        t = src * (want // len(src.encode()) + 1)
        out[name] = t.encode()[:want].decode("utf-8", "ignore")
    return out


def tiktoken_best(enc, text, rounds):
    n = len(enc.encode_ordinary(text))  # warm-up
    best = 1e30
    for _ in range(rounds):
        t0 = time.perf_counter()
        enc.encode_ordinary(text)
        best = min(best, time.perf_counter() - t0)
    return n, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--mb", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    bench = os.path.join(a.build, "bench_tokens")
    print(f"BPE tokenization, one thread, best of {a.rounds} rounds (tiktoken {tiktoken.__version__})")
    print(f"{'encoding':<12} {'text':<13} {'MB':>5} {'tokens':>9} {'dspyc MB/s':>11} "
          f"{'tiktoken MB/s':>14} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        corpora = texts(a.mb)
        for name in ["cl100k_base", "o200k_base"]:
            enc = tiktoken_oracle.encoding(name)
            for kind, text in corpora.items():
                path = os.path.join(tmp, kind + ".txt")
                data = text.encode()
                with open(path, "wb") as f:
                    f.write(data)
                r = subprocess.run([bench, "--encoding", name, "--file", path, "--rounds",
                                    str(a.rounds)], capture_output=True, text=True, check=True)
                mine = json.loads(r.stdout)
                n, best = tiktoken_best(enc, text, a.rounds)
                peer = len(data) / 1e6 / best
                same = "" if n == mine["tokens"] else f"  COUNTS DIFFER: tiktoken {n}"
                print(f"{name:<12} {kind:<13} {len(data) / 1e6:>5.1f} {mine['tokens']:>9} "
                      f"{mine['mb_s']:>11.1f} {peer:>14.1f} {mine['mb_s'] / peer:>5.2f}x{same}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
