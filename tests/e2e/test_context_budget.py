"""`dspyc run --context-budget`: on many random records, budgets and demo sets, no prompt
sent ever exceeds the budget (by the documented estimate, recomputed here from the recorded
requests); passages are dropped lowest-ranked first, then the last demos; a record that
cannot fit fails with class context_window and sends nothing; what was dropped is reported."""
import json
import math
import os
import random
import subprocess
import sys

import pytest

from conftest import DSPYC, ROOT, start_sim

WORDS = ["alpha", "beta", "gamma", "delta", "river", "town", "founder", "café", "東京",
         "x", "lorem", "ipsum"]


def estimate(messages):
    return 3 + sum(4 + math.ceil(len(m["content"].encode()) / 4) for m in messages)


def test_prompts_never_exceed_the_budget(tmp_path):
    rng = random.Random(11)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": " ".join(
        rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + f" p{i}"}) + "\n"
        for i in range(300)))
    rec = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", rec)
    cases, seen = [], {"passages": 0, "demos": 0, "fits": 0}
    for case in range(6):
        ndemos = rng.randint(0, 4)
        demos = [{"passages": ["d" * rng.randint(10, 400)], "question": f"dq{j}?",
                  "answer": "a" * rng.randint(1, 50)} for j in range(ndemos)]
        k = rng.randint(1, 12)
        budget, completion = rng.randint(150, 2500), rng.choice([16, 64])
        prog = tmp_path / f"p{case}.json"
        prog.write_text(json.dumps({"predictors": [
            {"module": "retrieve", "k": k, "corpus": str(corpus)},
            {"name": "answer", "signature": "passages: list[str], question -> answer",
             "demos": demos}]}))
        inp, out = tmp_path / f"in{case}.jsonl", tmp_path / f"out{case}.jsonl"
        inp.write_text("".join(json.dumps({"question": " ".join(
            rng.choice(WORDS) for _ in range(rng.randint(1, 40)))}) + "\n" for _ in range(25)))
        before = len(rec.read_text().splitlines()) if rec.exists() else 0
        r = subprocess.run([DSPYC, "run", prog, "--input", inp, "--output", out, "--base-url",
                            base, "--model", "m", "--cache", "off", "--concurrency", "1",
                            "--context-budget", str(budget), "--max-tokens", str(completion)],
                           capture_output=True, text=True)
        assert r.returncode in (0, 1), r.stderr
        sent = [json.loads(l)["body"] for l in rec.read_text().splitlines()[before:]]
        sent = [b for b in sent if isinstance(b, dict) and "messages" in b]
        results = [json.loads(l) for l in out.read_text().splitlines()]
        ok = [x for x in results if x["ok"]]
        assert len(sent) == len(ok)  # a record that cannot fit sends nothing
        for body, res in zip(sent, ok):  # --concurrency 1: requests in record order
            assert body["max_tokens"] == completion
            assert estimate(body["messages"]) <= budget - completion
            pred = res["prediction"]
            dropped = pred.get("context_dropped", {}).get("answer", {"passages": 0, "demos": 0})
            used = pred["passages"][: len(pred["passages"]) - dropped["passages"]]
            user = body["messages"][-1]["content"]
            for p in used:
                assert p in user
            for p in pred["passages"][len(used):]:  # the lowest-ranked went first
                assert p not in user
            if dropped["demos"]:
                assert not used  # demos go only once every passage has
            assert len(body["messages"]) == 2 + 2 * (len(demos) - dropped["demos"])
            seen["passages"] += dropped["passages"] > 0
            seen["demos"] += dropped["demos"] > 0
            seen["fits"] += "context_dropped" not in pred
            if "context_dropped" in pred:
                assert estimate(body["messages"]) == pred["context_dropped"]["answer"][
                    "prompt_tokens"]
        for res in results:
            if not res["ok"]:
                assert res["error"]["class"] == "context_window"
                assert "the context budget leaves" in res["error"]["message"]
        cases.append((len(ok), len(results)))
    assert any(o < n for o, n in cases), cases  # some records could not fit
    assert all(seen.values()), seen  # passages dropped, demos dropped, untouched prompts


def test_budget_flag_is_checked(tmp_path):
    r = subprocess.run([DSPYC, "run", "--signature", "q -> a", "--input", "-", "--output", "-",
                        "--context-budget", "100", "--max-tokens", "100"], capture_output=True,
                       text=True, input="")
    assert r.returncode == 2 and "leaves no room" in r.stderr
    r = subprocess.run([DSPYC, "run", "--help"], capture_output=True, text=True)
    assert "--context-budget N" in r.stdout


def _tiktoken(name):
    sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
    import tiktoken_oracle
    enc = tiktoken_oracle.encoding(name)
    return lambda text: len(enc.encode_ordinary(text))


def _wordpiece():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(ROOT, "models", "all-MiniLM-L6-v2", "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def chat_count(count, messages):
    """OpenAI's count of chat messages (the cookbook's num_tokens_from_messages)."""
    return 3 + sum(3 + sum(count(v) for v in m.values()) + ("name" in m) for m in messages)


@pytest.mark.parametrize("model,how,counting", [
    ("gpt-4o-mini", None, "o200k_base"), ("openai/gpt-4", None, "cl100k_base"),
    ("m", "cl100k_base", "cl100k_base"), ("gpt-4o", "estimate", "estimate"),
    ("m", "wordpiece", "wordpiece"), ("m", None, "estimate")])
def test_budget_counts_with_the_models_tokenizer(tmp_path, model, how, counting):
    """The budget counts with the model's BPE encoding when its name is known (or the one
    --context-tokens names), with the embedder's WordPiece when asked, else the estimate;
    the prompts sent fit by that count (recomputed with tiktoken / Hugging Face tokenizers),
    and the prediction and the summary say which counting it was."""
    count = {"o200k_base": lambda: _tiktoken("o200k_base"),
             "cl100k_base": lambda: _tiktoken("cl100k_base"), "wordpiece": _wordpiece,
             "estimate": lambda: None}[counting]()
    measure = estimate if count is None else (lambda msgs: chat_count(count, msgs))
    rng = random.Random(5)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": " ".join(
        rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + f" p{i}"}) + "\n"
        for i in range(100)))
    prog = tmp_path / "p.json"
    prog.write_text(json.dumps({"predictors": [
        {"module": "retrieve", "k": 8, "corpus": str(corpus)},
        {"name": "answer", "signature": "passages: list[str], question -> answer"}]}))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"question": " ".join(
        rng.choice(WORDS) for _ in range(rng.randint(1, 10)))}) + "\n" for _ in range(8)))
    rec = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", rec)
    budget, completion = 400, 32
    r = subprocess.run([DSPYC, "run", prog, "--input", inp, "--output", out, "--base-url", base,
                        "--model", model, "--cache", "off", "--concurrency", "1",
                        "--context-budget", str(budget), "--max-tokens", str(completion)] +
                       (["--context-tokens", how] if how else []), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"context budget: {budget} tokens, counted with {counting}" in r.stderr
    sent = [json.loads(l)["body"] for l in rec.read_text().splitlines()]
    sent = [b for b in sent if isinstance(b, dict) and "messages" in b]
    preds = [json.loads(l)["prediction"] for l in out.read_text().splitlines()]
    assert len(sent) == len(preds) == 8
    dropped = 0
    for body, pred in zip(sent, preds):
        assert measure(body["messages"]) <= budget - completion
        if "context_dropped" in pred:
            dropped += 1
            d = pred["context_dropped"]["answer"]
            assert d["counting"] == counting
            assert d["prompt_tokens"] == measure(body["messages"])
    assert dropped  # the budget was tight enough to drop passages


def test_context_tokens_flag_is_checked(tmp_path):
    r = subprocess.run([DSPYC, "run", "--signature", "q -> a", "--input", "-", "--output", "-",
                        "--context-budget", "100", "--context-tokens", "p50k"],
                       capture_output=True, text=True, input="")
    assert r.returncode == 2 and "--context-tokens: expected auto" in r.stderr
    r = subprocess.run([DSPYC, "run", "--help"], capture_output=True, text=True)
    assert "--context-tokens HOW" in r.stdout
