"""`dspyc run --context-budget`: on many random records, budgets and demo sets, no prompt
sent ever exceeds the budget (by the documented estimate, recomputed here from the recorded
requests); passages are dropped lowest-ranked first, then the last demos; a record that
cannot fit fails with class context_window and sends nothing; what was dropped is reported."""
import json
import math
import os
import random
import subprocess

from conftest import DSPYC, start_sim

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
