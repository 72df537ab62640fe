"""End-to-end tests of `dspyc embed` and `dspyc sim --embedder minilm`: the real binary on the
real model files (scripts/fetch-model.sh), compared with sentence-transformers' own vectors
(tests/data/minilm_reference.json), bad input lines as error records, model folder errors,
and the real `openai` SDK getting the same vectors from the simulator."""
import base64
import json
import math
import os
import shutil
import struct
import subprocess

import pytest
from openai import OpenAI

from conftest import DSPYC, ROOT, start_sim

pytestmark = [pytest.mark.e2e]

MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
REF = json.load(open(os.path.join(ROOT, "tests", "data", "minilm_reference.json"),
                    encoding="utf-8"))["texts"]


def embed(*args, stdin=None, env=None):
    r = subprocess.run([DSPYC, "embed", *args], input=stdin, capture_output=True, timeout=120,
                       env=env)
    lines = [json.loads(l) for l in r.stdout.decode().splitlines()]
    return r, lines


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def ref(text):
    return next(t for t in REF if t["text"] == text)


def test_arguments_match_sentence_transformers():
    texts = ["How do I cancel my subscription?", "Héllo, WORLD!! naïve café — 東京 … don't.",
             "Emoji 😀🎉👍🏽 and ❤️ and 🇫🇷 flags", ""]
    r, lines = embed(*texts)
    assert r.returncode == 0, r.stderr
    assert [l["index"] for l in lines] == [0, 1, 2, 3]
    for text, line in zip(texts, lines):
        v = line["embedding"]
        assert len(v) == 384
        assert abs(sum(x * x for x in v) - 1) < 1e-5
        assert cosine(v, ref(text)["embedding"]) >= 0.9999
    # Paraphrases are near, unrelated texts far.
    r, (a, b, c) = embed("How do I cancel my subscription?",
                         "I'd like to end my subscription, how do I do that?",
                         "The weather in Lisbon is sunny")
    assert cosine(a["embedding"], b["embedding"]) > 0.8 > 0.3 > cosine(a["embedding"],
                                                                      c["embedding"])


def test_tokens_are_the_reference_ids():
    texts = [t["text"] for t in REF if "\x00" not in t["text"]][:25]
    r, lines = embed("--tokens", *texts)
    assert r.returncode == 0, r.stderr
    for text, line in zip(texts, lines):
        assert line["ids"] == ref(text)["ids"], text


def test_input_file_bad_lines_are_error_records_in_order(tmp_path):
    good = ["first text", "Track order 48213", "東京は日本の首都です。", "last one"]
    rows = [json.dumps({"text": good[0]}).encode(),
            b"not json",
            b"",  # blank: skipped, no record
            json.dumps({"text": good[1], "id": 7}).encode(),
            json.dumps({"txt": "no text field"}).encode(),
            json.dumps(["an", "array"]).encode(),
            json.dumps({"text": 42}).encode(),
            json.dumps({"text": good[2]}, ensure_ascii=False).encode(),
            b'{"text": "bad \xff byte"}',
            json.dumps({"text": good[3]}).encode()]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    r, lines = embed("--input", str(path), "--batch", "3")
    assert r.returncode == 1  # some records failed
    assert [l["index"] for l in lines] == list(range(9))
    kinds = ["embedding" if "embedding" in l else l["error"]["class"] for l in lines]
    assert kinds == ["embedding", "parse", "embedding", "invalid", "parse", "invalid",
                     "embedding", "parse", "embedding"]
    assert [l.get("line") for l in lines if "error" in l] == [2, 5, 6, 7, 9]
    assert lines[3]["error"]["message"] == 'no "text" field'
    assert "0xff" in lines[7]["error"]["message"]  # jansson names the byte
    # The good lines get the same vectors as when given as arguments (batching changes nothing).
    _, direct = embed(*good)
    got = [l["embedding"] for l in lines if "embedding" in l]
    for a, b in zip(got, direct):
        assert max(abs(x - y) for x, y in zip(a, b["embedding"])) < 1e-6


def test_stdin_threads_and_invalid_utf8_argument():
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(40)]
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    r1, one = embed("--input", "-", "--threads", "1", stdin=stdin)
    r2, two = embed("--input", "-", "--threads", "2", "--batch", "7", stdin=stdin)
    assert r1.returncode == r2.returncode == 0
    for a, b in zip(one, two):
        assert a["index"] == b["index"]
        assert max(abs(x - y) for x, y in zip(a["embedding"], b["embedding"])) < 1e-6
    r = subprocess.run([DSPYC.encode(), b"embed", b"fine", b"bad \xc3\x28", b"also fine"],
                       capture_output=True)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert r.returncode == 1
    assert "embedding" in lines[0] and "embedding" in lines[2]
    assert lines[1]["error"]["class"] == "utf8" and lines[1]["error"]["offset"] == 4


def test_missing_and_corrupt_model_are_clear_errors(tmp_path):
    r, _ = embed("--model", str(tmp_path / "nowhere"), "x")
    assert r.returncode == 2
    assert b"nowhere" in r.stderr and b"fetch-model.sh" in r.stderr
    env = dict(os.environ, DSPYC_EMBED_MODEL=str(tmp_path / "from-env"))
    r, _ = embed("x", env=env)
    assert r.returncode == 2 and b"from-env" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(os.path.join(MODEL, "vocab.txt"), bad / "vocab.txt")
    r, _ = embed("--model", str(bad), "x")
    assert r.returncode == 2 and b"model.safetensors" in r.stderr
    with open(os.path.join(MODEL, "model.safetensors"), "rb") as f:
        head = f.read(5 << 20)
    (bad / "model.safetensors").write_bytes(head)  # cut short
    r, _ = embed("--model", str(bad), "x")
    assert r.returncode == 2
    assert b"model.safetensors" in r.stderr and b"truncated" in r.stderr
    # The variable names the folder when no flag does.
    env = dict(os.environ, DSPYC_EMBED_MODEL=MODEL)
    r, lines = embed("x", env=env)
    assert r.returncode == 0 and len(lines[0]["embedding"]) == 384


def test_help_lists_every_flag():
    r = subprocess.run([DSPYC, "embed", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ["--input", "--model", "--embed-model", "--batch", "--threads", "--tokens",
                 "--max-line-bytes"]:
        assert flag in r.stdout
    r = subprocess.run([DSPYC, "embed"], capture_output=True, text=True)
    assert r.returncode == 2 and "neither" in r.stderr


def test_sim_minilm_serves_the_same_vectors_to_the_openai_sdk():
    _, base = start_sim("--embedder", "minilm", "--embed-model", MODEL)
    cl = OpenAI(base_url=base, api_key="sk-test", max_retries=0, timeout=60)
    texts = ["How do I cancel my subscription?", "Is ibuprofen safe with alcohol?",
             "東京は日本の首都です。北京是中国的首都。"]
    got = cl.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64 on the wire
    flt = cl.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    # The simulator embeds each input on its own; `dspyc embed` batches its arguments, and
    # a batch may round the last bits differently where OpenBLAS does the multiplies (its
    # order of sums depends on the rows in a call). So each text is embedded alone here.
    mine = [embed(t)[1][0] for t in texts]
    _, ids = embed("--tokens", *texts)
    assert got.usage.prompt_tokens == sum(len(l["ids"]) for l in ids)  # the model's tokens
    for i, text in enumerate(texts):
        want = mine[i]["embedding"]
        assert got.data[i].index == i and len(got.data[i].embedding) == 384
        # float32 on both sides: the text form reads back to the very same floats.
        f32 = lambda v: struct.unpack("<384f", struct.pack("<384f", *v))
        assert f32(got.data[i].embedding) == f32(want)
        assert f32(flt.data[i].embedding) == f32(want)
        assert cosine(want, ref(text)["embedding"]) >= 0.9999
    import httpx
    r = httpx.post(base + "/embeddings", json={"model": "m", "input": "x", "dimensions": 64})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"
    b = httpx.post(base + "/embeddings", json={"model": "m", "input": texts[0],
                                               "encoding_format": "base64"}).json()
    raw = struct.unpack("<384f", base64.b64decode(b["data"][0]["embedding"]))
    assert raw == struct.unpack("<384f", struct.pack("<384f", *mine[0]["embedding"]))


def test_sim_minilm_without_model_does_not_start(tmp_path):
    r = subprocess.run([DSPYC, "sim", "--port", "0", "--embedder", "minilm", "--embed-model",
                        str(tmp_path / "none")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "none" in r.stderr and "--embedder minilm" in r.stderr
    r = subprocess.run([DSPYC, "sim", "--port", "0", "--embedder", "bert"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "hash or minilm" in r.stderr
