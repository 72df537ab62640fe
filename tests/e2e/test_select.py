"""The model selector (`--models`, `--select rules:FILE`, `--select measured:DEV.jsonl`,
`--quality-bar`) in `dspyc run` and `dspyc eval`, and the simulator's `--model-quality` that
gives it a real signal. Expected routes, accuracies and costs are computed here: levels from
the rules file's own definition, accuracy from the simulator's replies to the recorded
measurement requests (replayed), cost from the replayed usage."""
import json
import math
import re
import subprocess

import httpx
import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

PRICES = {"weak": {"input_per_1k": 0.1, "output_per_1k": 0.2},
          "mid": {"input_per_1k": 1.0, "output_per_1k": 2.0},
          "strong": {"input_per_1k": 5.0, "output_per_1k": 10.0}}
QUALITY = "weak=0.4,mid=0.8,strong=1.6"
RULES = {"fields": ["question"],
         "rules": [{"min_chars": 105, "level": 2}, {"keywords": ["Each", "a day"], "level": 1}]}


def dspyc(*args, timeout=120):
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def level(question):
    """RULES, as docs/cost.md defines them: the highest level of the rules matched."""
    lv = 0
    if len(question) >= 105:
        lv = max(lv, 2)
    if "each" in question.lower() or "a day" in question.lower():
        lv = max(lv, 1)
    return lv


def gen(tmp_path, name, n, seed):
    r = dspyc("sim", "gen-task", "arith", "--n", n, "--seed", seed)
    assert r.returncode == 0, r.stderr
    p = tmp_path / name
    p.write_text(r.stdout)
    return p, [json.loads(l) for l in r.stdout.splitlines()]


def setup(tmp_path):
    (tmp_path / "prices.json").write_text(json.dumps(PRICES))
    (tmp_path / "rules.json").write_text(json.dumps(RULES))
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec, "--model-quality", QUALITY)
    return base, rec


def chats(rec):
    return [r["body"] for r in map(json.loads, rec.read_text().splitlines())
            if r["path"] == "/v1/chat/completions"]


def question_of(body):
    user = body["messages"][-1]["content"]
    return user.split("[[ ## question ## ]]\n", 1)[1].split("\n\n", 1)[0]


def test_rules_route_each_record_to_its_level_s_model(tmp_path):
    base, rec = setup(tmp_path)
    inp, rows = gen(tmp_path, "in.jsonl", 60, 7)
    out = tmp_path / "out.jsonl"
    # candidates named out of price order: the selector orders them cheapest first
    r = dspyc("run", "--signature", "question -> answer", "--input", inp, "--output", out,
              "--base-url", base, "--model", "unused", "--models", "strong,weak,mid",
              "--select", f"rules:{tmp_path / 'rules.json'}", "--prices",
              tmp_path / "prices.json", "--cache", "off")
    assert r.returncode == 0, r.stderr
    order = ["weak", "mid", "strong"]
    want = [order[level(x["question"])] for x in rows]
    got = [json.loads(l)["model"] for l in out.read_text().splitlines()]
    assert got == want
    assert len(set(want)) == 3  # every level is exercised
    sent = {question_of(b): b["model"] for b in chats(rec)}
    assert len(sent) == 60 and all(sent[x["question"]] == m for x, m in zip(rows, want))
    counts = {m: want.count(m) for m in order}
    assert (f"records per model: weak {counts['weak']}, mid {counts['mid']}, strong "
            f"{counts['strong']}") in r.stderr
    # the cost line prices each model's own calls (replayed usage)
    with httpx.Client(timeout=30) as c:
        for m in order:
            usage = [c.post(base + "/chat/completions", json=b).json()["usage"]
                     for b in chats(rec)[:60] if b["model"] == m]
            usd = sum(u["prompt_tokens"] / 1000 * PRICES[m]["input_per_1k"] +
                      u["completion_tokens"] / 1000 * PRICES[m]["output_per_1k"] for u in usage)
            assert f"{m} at ${PRICES[m]['input_per_1k']:g} / " in r.stderr
            assert f": {counts[m]} calls, ${usd:.6f}" in r.stderr


def answer_of(reply):
    m = re.search(r"\[\[ ## answer ## \]\]\s*(\S+)", reply)
    return m.group(1) if m else None


def test_measured_picks_the_cheapest_model_meeting_the_bar_per_level(tmp_path):
    base, rec = setup(tmp_path)
    dev, dev_rows = gen(tmp_path, "dev.jsonl", 80, 11)
    test, test_rows = gen(tmp_path, "test.jsonl", 40, 12)
    bar = 0.3
    r = dspyc("eval", "--signature", "question -> answer", "--devset", test, "--metric",
              "exact_match:answer", "--base-url", base, "--model", "unused", "--models",
              "weak,mid,strong", "--select", f"measured:{dev}", "--select",
              f"rules:{tmp_path / 'rules.json'}", "--quality-bar", bar, "--prices",
              tmp_path / "prices.json", "--cache", "off", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "e.json").read_text())
    # accuracy per model and level, from the simulator's own replies to the measurement
    labels = {x["question"]: x["answer"] for x in dev_rows}
    right, n = {}, {}
    with httpx.Client(timeout=30) as c:
        for b in chats(rec)[: 3 * len(dev_rows)]:
            q = question_of(b)
            assert q in labels  # the measurement runs first, on the devset
            reply = c.post(base + "/chat/completions", json=b).json()
            ok = answer_of(reply["choices"][0]["message"]["content"]) == labels[q]
            key = (b["model"], level(q))
            right[key] = right.get(key, 0) + ok
            n[key] = n.get(key, 0) + 1
    order = ["weak", "mid", "strong"]
    choice = {}
    for lv in range(3):
        acc = [right[(m, lv)] / n[(m, lv)] for m in order]
        meets = [m for m, a in zip(order, acc) if a >= bar]
        choice[lv] = meets[0] if meets else order[max(range(3), key=lambda i: (acc[i], -i))]
        shown = doc["selection"]["levels"][lv]
        assert shown["model"] == choice[lv]
        assert shown["examples"] == n[("weak", lv)]
        for m, a in zip(order, acc):
            assert shown["accuracy"][m] == pytest.approx(a)
    # the quality factors are a real signal: weak < strong on the whole devset
    tot = {m: sum(right[(m, lv)] for lv in range(3)) for m in order}
    assert tot["weak"] < tot["strong"]
    for res, x in zip(doc["results"], test_rows):
        assert res["model"] == choice[level(x["question"])]
    routed = doc["selection"]["routed"]
    assert sum(routed.values()) == 40
    assert doc["cost"]["calls"] == 40
    assert doc["selection"]["measure_cost"]["calls"] == 3 * 80
    for m in order:
        calls = sum(1 for res in doc["results"] if res["model"] == m)
        assert routed[m] == calls
        assert doc["cost"]["by_model"].get(m, {"calls": 0})["calls"] == calls


def test_sim_model_quality_scales_the_chance_of_a_right_answer(tmp_path):
    _, base = start_sim("--model-quality", "weak=0.4,strong=2")
    dev, rows = gen(tmp_path, "dev.jsonl", 200, 5)
    scores = {}
    for m in ("weak", "plain", "strong"):
        r = dspyc("eval", "--signature", "question -> answer", "--devset", dev, "--metric",
                  "exact_match:answer", "--base-url", base, "--model", m, "--cache", "off", "-q")
        assert r.returncode == 0, r.stderr
        scores[m] = float(r.stdout)
    # zero-shot Predict: p = 0.25 (docs/simulator.md), times the factor, clamped to [0.05, 0.95]
    for m, q in (("weak", 0.4), ("plain", 1.0), ("strong", 2.0)):
        p = min(max(0.25 * q, 0.05), 0.95)
        assert abs(scores[m] / 100 - p) < 4 * math.sqrt(p * (1 - p) / 200), (m, scores)
    assert scores["weak"] < scores["plain"] < scores["strong"]
    r = dspyc("sim", "--model-quality", "weak=3")
    assert r.returncode == 2 and "must be a number in (0, 2]" in r.stderr


def test_bad_selector_inputs_are_refused_before_any_call(tmp_path):
    base, rec = setup(tmp_path)
    inp, _ = gen(tmp_path, "in.jsonl", 3, 1)
    common = ["run", "--signature", "question -> answer", "--input", inp, "--output",
              tmp_path / "o.jsonl", "--base-url", base, "--model", "m", "--prices",
              tmp_path / "prices.json", "--cache", "off"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"min_chars": 10, "level": 1},
                                         {"min_words": 3, "level": 1}]}))
    cases = [
        (["--models", "weak,nameless", "--select", f"rules:{tmp_path / 'rules.json'}"],
         "no price for candidate model nameless"),
        (["--models", "weak,mid", "--select", f"rules:{bad}"],
         'bad.json: rule 1: unknown key'),
        (["--select", f"rules:{tmp_path / 'rules.json'}"], "--select needs the candidates"),
        (["--models", "weak,mid"], "--models needs --select"),
        (["--models", "weak,mid", "--select", f"measured:{inp}"], "measured: needs --metric"),
        (["--models", "weak,mid", "--select", "guess:x"], "is not rules:FILE.json"),
        (["--models", "weak,weak", "--select", f"rules:{tmp_path / 'rules.json'}"],
         "named twice"),
        (["--models", "weak", "--select", f"rules:{tmp_path / 'rules.json'}",
          "--quality-bar", "1.5"], "--quality-bar"),
    ]
    for extra, msg in cases:
        r = dspyc(*common, *extra)
        assert r.returncode == 2 and msg in r.stderr, (extra, r.stderr)
    assert chats(rec) == []
