"""The simulator's facts task pack: `dspyc sim gen-task facts` writes a corpus and questions
with their supporting passages; the simulator answers right only when those passages are in
the prompt; and the RAG example in examples/rag scores higher as k grows and with a ranking
step between retrieval and the answer."""
import json
import os
import re
import subprocess

from conftest import DSPYC, ROOT

RAG = os.path.join(ROOT, "examples", "rag")


def run(*args, **kw):
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, **kw)


def gen(tmp_path, n=100, seed=1):
    corpus = tmp_path / "corpus.jsonl"
    r = run("sim", "gen-task", "facts", "--corpus", corpus, "--n", n, "--seed", seed)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in corpus.read_text().splitlines()], \
        [json.loads(l) for l in r.stdout.splitlines()]


def score(stderr):
    m = re.search(r"score \(exact match on `answer`\): ([\d.]+) / (\d+)", stderr)
    assert m, stderr
    return float(m.group(1)) / int(m.group(2))


def test_gen_task_facts_is_deterministic_and_grounded(tmp_path):
    corpus, qs = gen(tmp_path)
    assert len(corpus) == 7000 and len(qs) == 100
    by_id = {p["id"]: p for p in corpus}
    assert len(by_id) == len(corpus)
    for q in qs:
        assert q["hops"] == len(q["supporting"])
        last = by_id[q["supporting"][-1]]["text"]
        assert last.endswith(f" is {q['answer']}.")
    assert {q["hops"] for q in qs} == {1, 2}
    again = run("sim", "gen-task", "facts", "--corpus", tmp_path / "c2.jsonl", "--n", 100)
    assert [json.loads(l) for l in again.stdout.splitlines()] == qs
    other = run("sim", "gen-task", "facts", "--corpus", tmp_path / "c3.jsonl", "--seed", 2)
    assert (tmp_path / "c3.jsonl").read_text() != (tmp_path / "corpus.jsonl").read_text()
    r = run("sim", "gen-task", "facts")
    assert r.returncode == 2 and "--corpus FILE is required" in r.stderr
    del other


def test_simulator_answers_only_from_supporting_passages(tmp_path):
    corpus, qs = gen(tmp_path, n=200)
    by_id = {p["id"]: p["text"] for p in corpus}
    inp = tmp_path / "in.jsonl"
    rows = []
    for q in qs:
        rows.append({"question": q["question"], "answer": q["answer"],
                     "passages": [by_id[i] for i in q["supporting"]]})
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    with_p = run("run", "--signature", "passages: list[str], question -> answer", "--input",
                 inp, "--output", out, "--score", "answer")
    assert with_p.returncode == 0, with_p.stderr
    # without the passages the same questions are (almost) never right
    inp2 = tmp_path / "in2.jsonl"
    inp2.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]})
                            + "\n" for r in rows))
    without = run("run", "--signature", "question -> answer", "--input", inp2, "--output", out,
                  "--score", "answer")
    assert score(with_p.stderr) > 0.85
    assert score(without.stderr) < 0.05


def test_rag_example_score_rises_with_k(tmp_path):
    spec = json.load(open(os.path.join(RAG, "program.json")))
    got = {}
    for k in (1, 3, 10):
        spec["predictors"][0]["k"] = k
        spec["predictors"][0]["corpus"] = os.path.join(RAG, "corpus.jsonl")
        prog = tmp_path / f"rag{k}.json"
        prog.write_text(json.dumps(spec))
        r = run("run", prog, "--input", os.path.join(RAG, "dev.jsonl"), "--output",
                tmp_path / f"out{k}.jsonl", "--score", "answer")
        assert r.returncode == 0, r.stderr
        got[k] = score(r.stderr)
    assert got[1] < got[3] < got[10], got


def rag_score(tmp_path, name, edit=None):
    spec = json.load(open(os.path.join(RAG, name)))
    spec["predictors"][0]["corpus"] = os.path.join(RAG, "corpus.jsonl")
    if edit:
        edit(spec)
    prog = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.json"
    prog.write_text(json.dumps(spec))
    r = run("run", prog, "--input", os.path.join(RAG, "dev.jsonl"), "--output",
            tmp_path / "out.jsonl", "--score", "answer", "--cache", "off")
    assert r.returncode == 0, r.stderr
    return score(r.stderr)


def test_rag_example_score_rises_with_lm_ranking(tmp_path):
    # the answer sees two passages either way: BM25's top 2, or the LM's top 2 of BM25's 10
    def top2(spec):
        spec["predictors"][0]["k"] = 2
    plain = rag_score(tmp_path, "program.json", top2)
    ranked = rag_score(tmp_path, "program-rank.json")
    # measured with the default seed: 58.0 % and 63.5 %; the simulator puts the supporting
    # passages first in 90 % of rankings (docs/simulator.md)
    assert ranked >= plain + 0.04, (plain, ranked)


def test_rag_example_score_rises_with_embedding_rerank(tmp_path):
    def top2(spec):
        spec["predictors"][0]["k"] = 2

    def rerank(mmr):
        def edit(spec):
            spec["predictors"][0].update({"k": 2, "depth": 10, "rerank": "embed"})
            if mmr:
                spec["predictors"][0]["mmr"] = mmr
        return edit
    plain = rag_score(tmp_path, "program.json", top2)
    embed = rag_score(tmp_path, "program.json", rerank(None))
    diverse = rag_score(tmp_path, "program.json", rerank(0.7))
    # measured with the default seed: 58.0 %, 62.5 % (MiniLM cosine) and 63.5 % (MMR 0.7)
    assert embed >= plain + 0.03, (plain, embed)
    assert diverse >= plain + 0.03, (plain, diverse)
