"""`dspyc index`: BM25 scores identical to rank_bm25's BM25Okapi (k1=1.5, b=0.75,
epsilon=0.25) under the documented tokenizer, on a random corpus with unicode, titles,
repeated and very common words; top-k order; bad corpora and damaged indexes refused with
the file, line and field named."""
import json
import os
import random
import re
import subprocess

import pytest
from rank_bm25 import BM25Okapi

from conftest import DSPYC

TOKEN = re.compile(rb"[A-Za-z0-9\x80-\xff]+")


def tokenize(text):
    """The index's tokenizer (docs/retrieve.md): runs of ASCII letters/digits and non-ASCII
    bytes, ASCII lower-cased."""
    return [t.lower().decode("utf-8") for t in TOKEN.findall(text.encode("utf-8"))]


WORDS = ["the", "a", "of", "fox", "dog", "Café", "naïve", "über", "東京", "data", "x1",
         "BM25", "okapi", "retrieval", "passage", "query", "zeta", "alpha", "Beta", "gamma",
         "delta", "ünïcödé", "emoji😀", "it's", "e-mail", "rock'n'roll", "42", "3.14"]


def random_corpus(rng, n):
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(0, 40))]
        # "the" in most documents: a negative idf, floored to epsilon x mean idf
        if rng.random() < 0.8:
            words.insert(rng.randint(0, len(words)), "the")
        punct = [" ", "  ", ", ", ". ", "\t", " -- ", "\n"]
        text = "".join(w + rng.choice(punct) for w in words)
        doc = {"id": f"d{i}" if i % 3 else i, "text": text}
        if i % 4 == 0:
            doc["title"] = rng.choice(WORDS).title() + " " + rng.choice(WORDS)
        doc["extra"] = "ignored"
        docs.append(doc)
    return docs


def run(*args, **kw):
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, **kw)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=bool(random.random() < 0.5)) + "\n")


def long_text(doc):
    return f"{doc['title']} | {doc['text']}" if doc.get("title") else doc["text"]


def search(index, queries, k, *extra):
    qpath = os.path.join(os.path.dirname(index), "queries.txt")
    with open(qpath, "w", encoding="utf-8") as f:
        f.write("".join(q + "\n" for q in queries))
    r = run("index", "search", index, "-k", k, "--queries", qpath, *extra)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        hit = json.loads(line)
        out.setdefault(hit["query"], []).append(hit)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_scores_match_rank_bm25_exactly(tmp_path, seed):
    rng = random.Random(seed)
    docs = random_corpus(rng, 300)
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, docs)
    r = run("index", "build", corpus, "--out", tmp_path / "idx")
    assert r.returncode == 0, r.stderr
    assert "indexed 300 passages" in r.stderr
    bm25 = BM25Okapi([tokenize((d.get("title", "") + " " + d["text"])) for d in docs])
    queries = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(60)]
    queries += ["THE the The", "nothing-matches-here", "東京 Café", "emoji😀 über"]
    got = search(str(tmp_path / "idx"), queries, 1000)
    for qi, q in enumerate(queries, 1):
        scores = bm25.get_scores(tokenize(q))
        want = sorted((i for i in range(len(docs)) if any(t in bm25.doc_freqs[i]
                                                         for t in tokenize(q))),
                      key=lambda i: (-scores[i], i))
        hits = got.get(qi, [])
        assert [h["pid"] for h in hits] == want, q
        for h in hits:
            assert h["score"] == float(scores[h["pid"]]), (q, h)  # the same double
            assert h["id"] == str(docs[h["pid"]]["id"])
            assert h["text"] == long_text(docs[h["pid"]])
        for i in set(range(len(docs))) - set(want):
            assert scores[i] == 0.0
    # top-k is the head of the full ranking; the in-memory corpus form gives the same
    top3 = search(str(tmp_path / "idx"), queries, 3)
    mem = search(str(corpus), queries, 3, "--corpus")
    for qi in range(1, len(queries) + 1):
        assert top3.get(qi, []) == got.get(qi, [])[:3]
        assert mem.get(qi, []) == top3.get(qi, [])


BAD = [
    ('{"id": "a", "text": "ok"}\n{"id": "b"}\n', 2, "text", "missing"),
    ('{"id": "a", "text": 5}\n', 1, "text", "must be a string"),
    ('{"id": [1], "text": "x"}\n', 1, "id", "must be a string or an integer"),
    ('{"text": "x"}\n', 1, "id", "missing"),
    ('{"id": "a", "text": "x", "title": 3}\n', 1, "title", "must be a string"),
    ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', 2, "id", "repeats id"),
    ('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', 2, None, "invalid JSON"),
    ('{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y"}\n', 2, None, "blank line"),
    ('[1, 2]\n', 1, None, "must be a JSON object"),
]


@pytest.mark.parametrize("text,line,field,what", BAD)
def test_bad_corpus_names_file_line_field(tmp_path, text, line, field, what):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(text)
    r = run("index", "build", corpus, "--out", tmp_path / "idx")
    assert r.returncode == 1
    assert f"bad.jsonl:{line}:" in r.stderr and what in r.stderr, r.stderr
    if field:
        assert f'field "{field}"' in r.stderr
    assert not (tmp_path / "idx" / "bm25.idx").exists()


def test_empty_corpus_and_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    r = run("index", "build", tmp_path / "empty.jsonl", "--out", tmp_path / "idx")
    assert r.returncode == 1 and "no passages" in r.stderr
    r = run("index", "build", tmp_path / "nope.jsonl", "--out", tmp_path / "idx")
    assert r.returncode == 1 and "nope.jsonl: cannot open" in r.stderr


def test_damaged_index_is_refused(tmp_path):
    corpus = tmp_path / "c.jsonl"
    write_jsonl(corpus, random_corpus(random.Random(5), 50))
    assert run("index", "build", corpus, "--out", tmp_path / "idx").returncode == 0
    idx = tmp_path / "idx" / "bm25.idx"
    data = idx.read_bytes()
    cases = {
        "cut short": data[: len(data) // 2],
        "shorter than its header": data[:40],
        "checksum mismatch": data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:],
        "wrong magic": b"XXXXXXXX" + data[8:],
        "format version": data[:8] + b"\x09\x00\x00\x00" + data[12:],
    }
    for what, bad in cases.items():
        idx.write_bytes(bad)
        r = run("index", "search", tmp_path / "idx", "fox")
        assert r.returncode == 1, what
        assert "not a valid BM25 index" in r.stderr and what in r.stderr, (what, r.stderr)
        assert str(idx) in r.stderr
    idx.write_bytes(data)
    assert run("index", "search", tmp_path / "idx", "fox").returncode == 0
    r = run("index", "search", tmp_path / "nothing", "fox")
    assert r.returncode == 1 and "cannot open the index" in r.stderr


def test_index_help_and_usage_errors(tmp_path):
    r = run("index", "--help")
    assert r.returncode == 0 and "usage: dspyc index build" in r.stdout and "--queries" in r.stdout
    assert run("index", "frob").returncode == 2
    r = run("index", "build", tmp_path / "c.jsonl")
    assert r.returncode == 2 and "--out DIR" in r.stderr
    r = run("index", "search", tmp_path, "-k", "0", "x")
    assert r.returncode == 2
