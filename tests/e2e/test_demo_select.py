"""`dspyc run --demo-select mmr:K[:LAMBDA]`: per record, K of the demos picked by maximal
marginal relevance over MiniLM embeddings. The expected picks are computed here with numpy
from vectors `dspyc embed` gives for the same texts; the recorded request must hold exactly
those demos, in their own order; a missing model folder is a clear error."""
import json
import subprocess

import numpy as np
import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

DEMOS = ["Which river flows through Paris?", "How long is the Nile river?",
         "Where does the Amazon river reach the sea?", "How do I bake sourdough bread?",
         "What temperature should an oven be for pizza?", "How long do you boil pasta?",
         "Who won the football world cup in 2018?", "How many sets are in a tennis final?",
         "How far is a marathon run?"]
INPUTS = ["Which is the longest river in Europe?", "How much salt goes into bread dough?",
          "How many players are on a football team?"]


def embed(texts, tmp_path):
    f = tmp_path / "texts.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    r = subprocess.run([DSPYC, "embed", "--input", f], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return np.array([json.loads(l)["embedding"] for l in r.stdout.splitlines()])


def mmr(q, vecs, k, lam):
    rel = vecs @ q
    cand, picked = list(range(len(vecs))), []
    for _ in range(k):
        def value(c):
            red = max((vecs[c] @ vecs[j] for j in picked), default=0.0)
            return lam * rel[c] - (1 - lam) * red
        best = max(cand, key=lambda c: (value(c), -c))  # ties: the earlier demo
        picked.append(best)
        cand.remove(best)
    return sorted(picked)


def test_mmr_picks_match_an_independent_computation(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"question": q, "answer": f"a{i}"}) + "\n"
                             for i, q in enumerate(DEMOS)))
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"question": q}) + "\n" for q in INPUTS))
    dvec, qvec = embed(DEMOS, tmp_path), embed(INPUTS, tmp_path)
    seen = set()
    for spec, lam in (("mmr:3", 0.5), ("mmr:3:1", 1.0), ("mmr:4:0.2", 0.2)):
        k = int(spec.split(":")[1])
        out = tmp_path / "out.jsonl"
        n0 = len(rec.read_text().splitlines()) if rec.exists() else 0
        r = subprocess.run([DSPYC, "run", "--signature", "question -> answer", "--demos", demos,
                            "--input", inp, "--output", out, "--base-url", base, "--model", "m",
                            "--cache", "off", "--concurrency", "1", "--demo-select", spec],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        sent = [json.loads(l)["body"]["messages"] for l in rec.read_text().splitlines()[n0:]]
        for i, (line, msgs) in enumerate(zip(out.read_text().splitlines(), sent)):
            want = mmr(qvec[i], dvec, k, lam)
            got = json.loads(line)["prediction"]["demos_selected"]["predict"]
            assert got == want, (spec, INPUTS[i])
            shown = [m["content"] for m in msgs[1:-1:2]]  # demo user turns, in order
            assert len(shown) == k
            assert all(DEMOS[j] in s for j, s in zip(want, shown))
            seen.add(tuple(want))
        if lam == 1.0:  # relevance alone: each record's own topic
            for i, line in enumerate(out.read_text().splitlines()):
                got = json.loads(line)["prediction"]["demos_selected"]["predict"]
                assert got == [3 * i, 3 * i + 1, 3 * i + 2]
    assert len(seen) > 3  # the records got different demos
    # the model folder missing: a clear error, nothing sent
    n0 = len(rec.read_text().splitlines())
    r = subprocess.run([DSPYC, "run", "--signature", "question -> answer", "--demos", demos,
                        "--input", inp, "--output", tmp_path / "o.jsonl", "--base-url", base,
                        "--model", "m", "--cache", "off", "--demo-select", "mmr:2",
                        "--embed-model", tmp_path / "nowhere"], capture_output=True, text=True)
    assert r.returncode == 2 and "--demo-select: model folder" in r.stderr
    assert "fetch-model.sh" in r.stderr
    assert len(rec.read_text().splitlines()) == n0
    r = subprocess.run([DSPYC, "run", "--signature", "q -> a", "--input", inp, "--output",
                        tmp_path / "o.jsonl", "--demo-select", "kcenter:3"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "is not mmr:K" in r.stderr
