#!/usr/bin/env python3
"""List where the base rules of scripts/gen_wordpiece_tables.py (Python's unicodedata)
disagree with the Hugging Face fast tokenizer that sentence-transformers runs
(BertNormalizer + BertPreTokenizer), over every code point, as the lines of
scripts/wordpiece_overrides.txt: "U+XXXX CLASS" where the reference treats a character as
another class, "U+XXXX map U+YYYY..." where it normalizes it to other characters. The
reference's Unicode data is older than Python's for categories (newer marks and format
characters stay as they are) and newer for lower-casing.

Run it in the venv that made the reference vectors (see make_minilm_reference.py: it needs
the `tokenizers` package), then regenerate the tables:
    python tests/data/check_wordpiece_unicode.py models/all-MiniLM-L6-v2/tokenizer.json \
        > scripts/wordpiece_overrides.txt
    python tests/data/check_wordpiece_unicode.py TOKENIZER_JSON --with-overrides  # 0 and 0
    python3 scripts/gen_wordpiece_tables.py > src/vec/wordpiece_tables.c
"""
import os
import sys

from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import gen_wordpiece_tables as gen  # noqa: E402


def expected(cp, over, over_maps):
    cls = over.get(cp, gen.base_class(cp))
    if cls == "DROP":
        return cls, ""
    if cls == "SPACE":
        return cls, " "
    if gen.HANGUL[0] <= cp <= gen.HANGUL[1]:
        import unicodedata
        m = unicodedata.normalize("NFD", chr(cp))
    else:
        m = "".join(map(chr, over_maps.get(cp, gen.mapping(cp))))
    return cls, (" " + m + " ") if cls == "CJK" else m


def pre_class(pre, ch):
    words = [w for w, _ in pre.pre_tokenize_str("a" + ch + "b")]
    return "PUNCT" if words == ["a", ch, "b"] else "OTHER" if len(words) == 1 else "SPACE"


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    norm, pre = tok.normalizer, tok.pre_tokenizer
    over, over_maps = {}, {}  # the base rules alone
    if "--with-overrides" in sys.argv:  # should then find nothing
        over, over_maps = gen.load_overrides(
            os.path.join(os.path.dirname(gen.__file__), "wordpiece_overrides.txt"))
    class_diff, map_diff = [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        cls, want = expected(cp, over, over_maps)
        got = norm.normalize_str(chr(cp))
        if got != want:
            m = "".join(map(chr, over_maps.get(cp, gen.mapping(cp))))
            if got == "":
                ref = "DROP"
            elif got == " ":
                ref = "SPACE"
            elif got == " " + m + " ":
                ref = "CJK"
            elif got == m:  # kept as a word character or punctuation
                ref = pre_class(pre, got)
            else:
                ref = None
            if ref and ref != cls:
                class_diff.append((cp, ref, cls))
                continue
            map_diff.append((cp, want, got))
            if len(got) == 1 and cls in ("OTHER", "PUNCT"):
                ref = pre_class(pre, got)
                out_cls = over.get(ord(got), gen.base_class(ord(got)))
                if ref != out_cls and ref != "SPACE":
                    class_diff.append((ord(got), ref, out_cls))
            continue
        if cls in ("OTHER", "PUNCT") and len(got) == 1:
            # The tables class the normalized character (what the pre-tokenizer sees).
            out_cls = over.get(ord(got), gen.base_class(ord(got)))
            out_cls = out_cls if out_cls in ("OTHER", "PUNCT") else "OTHER"
            ref = pre_class(pre, got)
            if ref != out_cls:
                class_diff.append((ord(got), ref, out_cls))
    for cp, ref, cls in class_diff:
        print("U+%04X %s  # unicodedata says %s" % (cp, ref, cls))
    for cp, want, got in map_diff:
        print("U+%04X map %s  # the tables give %s" % (
            cp, " ".join("U+%04X" % ord(c) for c in got), " ".join("U+%04X" % ord(c) for c in want)))
    print("# %d class differences, %d normalization differences" % (len(class_diff), len(map_diff)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
