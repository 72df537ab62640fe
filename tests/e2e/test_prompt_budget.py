"""`dspyc run --prompt-budget N`: prompt trimming toward a token target. Whitespace in the
instructions and demos is collapsed first, then the last demos are dropped; the record's
inputs are never touched, and a prompt that cannot reach the target is still sent, marked
over budget. Checked on the requests the simulator recorded."""
import json
import math
import re
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]


def estimate(messages):  # the context manager's documented estimate (docs/retrieve.md)
    return 3 + sum(4 + math.ceil(len(m["content"].encode()) / 4) for m in messages)


INSTRUCTIONS = "Answer   the\tquestion.\n\n\n\n   Be    brief,    and     exact.   "
INPUT = "What   is\t\tthe   answer?\n\n\n  (keep    these   spaces)"


def run(tmp_path, base, rec, budget):
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"question": f"demo   question  {i}\n\n\n\n  padded   "
                                                     + "  word " * 30,
                                         "answer": f"   answer    {i}   "}) + "\n"
                             for i in range(6)))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"question": INPUT}) + "\n")
    n0 = len(rec.read_text().splitlines()) if rec.exists() else 0
    args = ["run", "--signature", "question -> answer", "--instructions", INSTRUCTIONS,
            "--demos", demos, "--input", inp, "--output", out, "--base-url", base, "--model",
            "m", "--cache", "off"]
    full = subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    untrimmed = json.loads(rec.read_text().splitlines()[n0])["body"]["messages"]
    r = subprocess.run([DSPYC, *map(str, args), "--prompt-budget", str(budget(untrimmed))],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sent = json.loads(rec.read_text().splitlines()[n0 + 1])["body"]["messages"]
    pred = json.loads(out.read_text())["prediction"]
    return untrimmed, sent, pred["context_dropped"]["predict"]


def test_whitespace_first_then_the_last_demos_never_the_inputs(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    # 1. a target that collapsing whitespace alone reaches: every demo stays
    untrimmed, sent, rep = run(tmp_path, base, rec, lambda m: estimate(m) - 20)
    assert len(untrimmed) == len(sent) == 1 + 2 * 6 + 1
    # the adapter indents the instructions (as DSPy's); inside them one space, one blank line
    assert re.search(r"Answer the question\.\n\s*\n\s*Be brief, and exact\.$", sent[0]["content"])
    assert "Be    brief" in untrimmed[0]["content"] and "Be    brief" not in sent[0]["content"]
    assert sent[-1]["content"] == untrimmed[-1]["content"]  # the input, byte for byte
    assert INPUT in sent[-1]["content"]
    assert rep["demos"] == 0 and rep["passages"] == 0 and not rep["over_budget"]
    assert rep["whitespace_tokens"] == estimate(untrimmed) - estimate(sent) > 0
    assert rep["prompt_tokens"] == estimate(sent) <= rep["budget"]
    for k in range(1, 7, 2):  # demo pairs keep their order, whitespace collapsed
        assert re.fullmatch(r"\[\[ ## question ## \]\]\ndemo question \d+\n\npadded( word)+",
                            sent[k]["content"]), sent[k]["content"]
    # 2. a tighter target: the last demos go, the first stay
    base_len = estimate(untrimmed)
    untrimmed, sent, rep = run(tmp_path, base, rec, lambda m: base_len // 2)
    kept = (len(sent) - 2) // 2
    assert 0 < kept < 6 and rep["demos"] == 6 - kept
    assert [f"demo question {i}" in sent[1 + 2 * i]["content"] for i in range(kept)] == \
        [True] * kept
    assert rep["prompt_tokens"] == estimate(sent) <= rep["budget"] == base_len // 2
    assert sent[-1]["content"] == untrimmed[-1]["content"]
    # 3. a target below the inputs alone: every demo dropped, still sent, over budget
    untrimmed, sent, rep = run(tmp_path, base, rec, lambda m: 10)
    assert len(sent) == 2 and rep["demos"] == 6 and rep["over_budget"]
    assert sent[-1]["content"] == untrimmed[-1]["content"]
    r = subprocess.run([DSPYC, "run", "--signature", "q -> a", "--input", "-", "--output", "-",
                        "--prompt-budget", "0"], capture_output=True, text=True, input="")
    assert r.returncode == 2 and "--prompt-budget" in r.stderr
