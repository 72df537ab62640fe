"""Retrieve steps in program files: `dspyc run` of a RAG program (BM25 index, in-memory
corpus, ColBERTv2 server), the passages in the prompt exactly as DSPy's ChatAdapter formats
a list[str] field, the passages in the output, DSPy's ColBERTv2 protocol against a stub
server (which DSPy's own client reads the same way), and program-file errors."""
import http.server
import json
import os
import subprocess
import threading
import urllib.parse

import pytest

from conftest import DSPYC, start_sim

CORPUS = [
    {"id": "p1", "title": "Paris", "text": "Paris is the capital of France."},
    {"id": "p2", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "p3", "text": "The Seine flows through Paris."},
    {"id": "p4", "text": "Bananas are yellow."},
    {"id": "p5", "text": "Cats sleep most of the day."},
    {"id": "p6", "text": "Rain falls in April."},
    {"id": "p7", "text": "Snow is cold."},
    {"id": "p8", "text": "Owls hunt at night."},
]


def dspyc(*args, timeout=120):
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL"):
        e.pop(k, None)
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=e,
                          timeout=timeout)


def rag_program(step):
    return {
        "name": "rag",
        "predictors": [
            {"module": "retrieve", "k": 2, "query": "question", **step},
            {"name": "answer", "signature": "passages: list[str], question -> answer"},
        ],
    }


def write(path, obj):
    path.write_text(json.dumps(obj, indent=2))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    return path


def run_rag(tmp_path, program, questions):
    rec = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", rec)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
    r = dspyc("run", program, "--input", inp, "--output", out, "--base-url", base, "--model",
              "openai/dspyc-sim")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    bodies = [json.loads(l)["body"] for l in rec.read_text().splitlines()]
    return lines, [b for b in bodies if isinstance(b, dict) and "messages" in b]


def test_run_rag_program_over_an_index(tmp_path, corpus):
    assert dspyc("index", "build", corpus, "--out", tmp_path / "idx").returncode == 0
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"index": "idx"}))  # relative to the program file's folder
    lines, chat = run_rag(tmp_path, prog, ["What is the capital of France?", "yellow fruit?"])
    first = lines[0]["prediction"]
    assert first["passages"] == ["Paris | Paris is the capital of France.",
                                 "Berlin | Berlin is the capital of Germany."]
    assert "answer" in first
    assert lines[1]["prediction"]["passages"] == ["Bananas are yellow."]
    assert len(chat) == 2

    import dspy  # the prompt as DSPy formats the same inputs
    sig = dspy.Signature("passages: list[str], question -> answer")
    want = dspy.ChatAdapter().format(sig, demos=[], inputs={
        "passages": first["passages"], "question": "What is the capital of France?"})
    # the records run concurrently: their requests may reach the simulator in either order
    france = [c for c in chat if "capital of France?" in c["messages"][-1]["content"]]
    assert len(france) == 1
    got = {m["role"]: m["content"] for m in france[0]["messages"]}
    assert got["user"] == want[-1]["content"]
    assert got["system"] == want[0]["content"]


def test_run_rag_program_over_a_corpus_with_output_field(tmp_path, corpus):
    prog = tmp_path / "rag.json"
    spec = rag_program({"corpus": "corpus.jsonl", "output": "context", "k": 1, "name": "search"})
    spec["predictors"][1]["signature"] = "context: list[str], question -> answer"
    write(prog, spec)
    lines, chat = run_rag(tmp_path, prog, ["Seine river"])
    assert lines[0]["prediction"]["context"] == ["The Seine flows through Paris."]
    assert "The Seine flows through Paris." in chat[0]["messages"][-1]["content"]


class ColbertStub(http.server.BaseHTTPRequestHandler):
    """A ColBERTv2 server as DSPy's client expects one: GET ?query=&k= -> {"topk": [...]}."""
    seen = []

    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        ColbertStub.seen.append((q["query"][0], int(q["k"][0])))
        if q["query"][0] == "boom":
            body = {"error": True, "message": "index not loaded"}
        else:
            words = set(q["query"][0].lower().split())
            hits = [d for d in CORPUS if words & set(d["text"].lower().rstrip(".").split())]
            body = {"query": q["query"][0], "topk": [
                {"text": d["text"], "pid": i, "rank": i + 1, "score": 10.0 - i,
                 "prob": 0.5} for i, d in enumerate(hits)][: int(q["k"][0])]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def colbert():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ColbertStub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    ColbertStub.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/api/search"
    srv.shutdown()
    srv.server_close()


def test_run_rag_program_over_colbertv2(tmp_path, colbert):
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"url": colbert}))
    lines, chat = run_rag(tmp_path, prog, ["capital & paris?"])
    assert ColbertStub.seen[0] == ("capital & paris?", 2)  # the query URL-encoded, k sent
    got = lines[0]["prediction"]["passages"]
    assert got == ["Paris is the capital of France.", "Berlin is the capital of Germany."]
    # DSPy's own client reads the stub the same way (the protocol fixture is DSPy's)
    import dspy
    assert dspy.ColBERTv2(url=colbert)("capital paris", k=2, simplify=True) == got


def test_colbertv2_error_answer_fails_the_record(tmp_path, colbert):
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"url": colbert}))
    _, base = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"question": "boom"}) + "\n" + json.dumps({"question": 5}) + "\n")
    r = dspyc("run", prog, "--input", inp, "--output", out, "--base-url", base, "--model", "m")
    assert r.returncode == 1
    a, b = [json.loads(l) for l in out.read_text().splitlines()]
    assert "retrieve step retrieve" in a["error"]["message"]
    assert "index not loaded" in a["error"]["message"]
    assert 'the query field "question" must be a string' in b["error"]["message"]


@pytest.mark.parametrize("step,what", [
    ({"index": "nope"}, "cannot open the index"),
    ({"corpus": "corpus.jsonl", "k": 0}, '"k" must be an integer from 1 to 1000'),
    ({"corpus": "corpus.jsonl", "index": "idx"}, 'needs one of "index"'),
    ({"corpus": "corpus.jsonl", "kk": 1}, 'unknown key "kk" in a retrieve step'),
    ({"corpus": "corpus.jsonl", "name": "answer"}, "unique among the predictors"),
    ({"corpus": "bad.jsonl"}, 'bad.jsonl:2: field "text": missing'),
    ({"url": "ftp://x"}, "must start with http"),
])
def test_bad_retrieve_step_names_file_and_key(tmp_path, corpus, step, what):
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 2}\n')
    prog = tmp_path / "rag.json"
    write(prog, rag_program(step))
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2
    assert what in r.stderr, r.stderr
    assert "rag.json:" in r.stderr and "predictors[" in r.stderr


def test_state_files_carry_retrieve_k_as_dspy_writes_them(tmp_path, corpus):
    import dspy

    class RAG(dspy.Module):
        def __init__(self):
            super().__init__()
            self.retrieve = dspy.Retrieve(k=2)
            self.answer = dspy.Predict("passages: list[str], question -> answer")

    rag = RAG()
    rag.retrieve.k = 4
    rag.answer.demos = [dspy.Example(passages=["x"], question="q?", answer="a")]
    # DSPy 3.3.1's save() fails on a Retrieve (its dump_state takes no json_mode), so the
    # file is built from each parameter's own dump_state, in named_parameters() order, as
    # save() would; DSPy's load() reads it (checked below).
    saved = tmp_path / "dspy_state.json"
    state = {"retrieve": rag.retrieve.dump_state(),
             "answer": rag.answer.dump_state(json_mode=True),
             "metadata": {"dependency_versions": {"python": "3.11", "dspy": "3.3.1",
                                                  "cloudpickle": "3.1"}}}
    assert [n for n, _ in rag.named_parameters()] == ["retrieve", "answer"]
    saved.write_text(json.dumps(state))
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"corpus": "corpus.jsonl"}))
    mine = tmp_path / "dspyc_state.json"
    _, base = start_sim()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"question": "capital of France, Germany, Seine, Paris?"}) + "\n")
    r = dspyc("run", prog, "--state", saved, "--save-state", mine, "--input", inp, "--output",
              out, "--base-url", base, "--model", "m")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())["prediction"]["passages"]) == 4  # k from the state
    assert json.loads(mine.read_text()) == json.loads(saved.read_text())
    assert list(json.loads(mine.read_text())) == ["retrieve", "answer", "metadata"]
    back = RAG()
    back.load(str(mine))
    assert back.retrieve.k == 4
    bad = json.loads(saved.read_text())
    bad["retrieve"] = {"k": 0}
    saved.write_text(json.dumps(bad))
    r = dspyc("run", prog, "--state", saved, "--input", inp, "--output", out, "--base-url",
              base, "--model", "m")
    assert r.returncode == 2 and '"k" must be an integer from 1 to 1000' in r.stderr


def test_run_summary_estimates_cost_from_prices(tmp_path, corpus):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"dspyc-sim": {"input_per_1k": 0.5, "output_per_1k": 2.0}}))
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"corpus": "corpus.jsonl"}))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"question": f"capital {i}?"}) + "\n" for i in range(5)))
    r = dspyc("run", prog, "--input", inp, "--output", out, "--prices", prices, "--cache", "off")
    assert r.returncode == 0, r.stderr
    import re
    m = re.search(r"tokens: (\d+) prompt, (\d+) completion", r.stderr)
    want = int(m.group(1)) / 1000 * 0.5 + int(m.group(2)) / 1000 * 2.0
    c = re.search(r"estimated cost: \$([\d.]+) \(openai/dspyc-sim at \$0.5 / \$2 per 1k", r.stderr)
    assert c, r.stderr
    assert abs(float(c.group(1)) - want) < 1e-6
    # an unknown model says so; a bad file is refused naming it and the model
    r = dspyc("run", prog, "--input", inp, "--output", out, "--cache", "off", "--model",
              "openai/my-own-model")
    assert "estimated cost: unknown (no price for model openai/my-own-model" in r.stderr
    prices.write_text(json.dumps({"x": {"input_per_1k": "cheap", "output_per_1k": 1}}))
    r = dspyc("run", prog, "--input", inp, "--output", out, "--prices", prices)
    assert r.returncode == 2 and "prices.json: model \"x\": needs exactly" in r.stderr


def test_dense_and_hybrid_retrieval_over_an_embeddings_endpoint(tmp_path, corpus):
    rec = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", rec)
    q = "What is the capital of France?"

    def run_mode(mode, k, **extra):
        prog = tmp_path / f"rag_{mode}_{k}.json"
        write(prog, rag_program({"corpus": "corpus.jsonl", "mode": mode, "k": k,
                                 "dense": {"base_url": base, "model": "emb"}, **extra}))
        inp, out = tmp_path / "in.jsonl", tmp_path / f"out_{mode}_{k}.jsonl"
        inp.write_text(json.dumps({"question": q}) + "\n")
        r = dspyc("run", prog, "--input", inp, "--output", out, "--base-url", base, "--model",
                  "m", "--cache", "off")
        assert r.returncode == 0, r.stderr
        return json.loads(out.read_text())["prediction"]["passages"]

    dense_all = run_mode("dense", len(CORPUS))
    bodies = [json.loads(l)["body"] for l in rec.read_text().splitlines()]
    emb = [b for b in bodies if isinstance(b, dict) and "input" in b]
    assert len(emb) == 2  # the corpus in one batch, then the query
    assert emb[0]["model"] == "emb" and len(emb[0]["input"]) == len(CORPUS)
    assert emb[1]["input"] == [q]
    # dense: the exact cosine ranking of the endpoint's own vectors
    import numpy as np
    from openai import OpenAI
    cli = OpenAI(base_url=base, api_key="x")
    texts = [f"{d['title']} | {d['text']}" if d.get("title") else d["text"] for d in CORPUS]
    vecs = np.array([e.embedding for e in cli.embeddings.create(model="emb", input=texts).data])
    qv = np.array(cli.embeddings.create(model="emb", input=[q]).data[0].embedding)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    order = sorted(range(len(texts)), key=lambda i: (-float(vecs[i] @ qv), i))
    assert dense_all == [texts[i] for i in order]
    # hybrid: reciprocal-rank fusion of BM25's and the dense ranking (60 + rank)
    r = dspyc("index", "search", corpus, "--corpus", "-k", "50", q)
    bm25 = [json.loads(l)["text"] for l in r.stdout.splitlines()]
    fused = {}
    for lst in (bm25, dense_all):
        for rank, t in enumerate(lst, 1):
            fused[t] = fused.get(t, 0) + 1 / (60 + rank)
    first = {t: i for i, t in enumerate(bm25 + [t for t in dense_all if t not in bm25])}
    want = sorted(fused, key=lambda t: (-fused[t], first[t]))[:3]
    assert run_mode("hybrid", 3) == want


def test_dense_step_errors_name_the_key(tmp_path, corpus):
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"corpus": "corpus.jsonl", "mode": "dense"}))
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2 and '"mode": "dense" needs "dense"' in r.stderr
    write(prog, rag_program({"corpus": "corpus.jsonl", "mode": "dense",
                             "dense": {"base_url": "http://127.0.0.1:1/v1", "model": "e"}}))
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2 and "embeddings endpoint http://127.0.0.1:1/v1/embeddings" in r.stderr
    write(prog, rag_program({"corpus": "corpus.jsonl", "mode": "fuzzy"}))
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2 and '"mode" must be "bm25", "dense" or "hybrid"' in r.stderr


def test_rag_batch_of_hits_and_misses_sends_only_the_misses_in_order(tmp_path, corpus):
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"corpus": "corpus.jsonl"}))
    cache = tmp_path / "cache"
    qs = [f"capital of France {i}?" for i in range(30)]
    old, mixed = tmp_path / "old.jsonl", tmp_path / "mixed.jsonl"
    old.write_text("".join(json.dumps({"question": q}) + "\n" for q in qs[::2]))
    mixed.write_text("".join(json.dumps({"question": q}) + "\n" for q in qs))
    rec1, rec2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    _, base1 = start_sim("--record", rec1)
    r = dspyc("run", prog, "--input", old, "--output", tmp_path / "o1.jsonl", "--base-url",
              base1, "--model", "m", "--cache", "mem,disk", "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    _, base2 = start_sim("--record", rec2)
    out = tmp_path / "o2.jsonl"
    r = dspyc("run", prog, "--input", mixed, "--output", out, "--base-url", base2, "--model", "m",
              "--cache", "mem,disk", "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    sent = [json.loads(l)["body"] for l in rec2.read_text().splitlines()]
    asked = sorted(b["messages"][-1]["content"].split("[[ ## question ## ]]\n")[1].split("\n")[0]
                   for b in sent if isinstance(b, dict) and "messages" in b)
    assert asked == sorted(qs[1::2])  # only the misses reached the LM
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [x["line"] for x in lines] == list(range(1, 31))  # results in input order
    first = {json.loads(l)["line"]: json.loads(l) for l in (tmp_path / "o1.jsonl").read_text()
             .splitlines()}
    for i in range(0, 30, 2):  # hits give the earlier answers
        assert lines[i]["prediction"] == first[i // 2 + 1]["prediction"]


def test_dense_mmr_diverse_selection(tmp_path, corpus):
    _, base = start_sim()
    q = "What is the capital of France?"
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"corpus": "corpus.jsonl", "mode": "dense", "k": 4, "mmr": 0.5,
                             "depth": 6, "dense": {"base_url": base, "model": "emb"}}))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"question": q}) + "\n")
    r = dspyc("run", prog, "--input", inp, "--output", out, "--base-url", base, "--model", "m",
              "--cache", "off")
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())["prediction"]["passages"]
    import numpy as np
    from openai import OpenAI
    cli = OpenAI(base_url=base, api_key="x")
    texts = [f"{d['title']} | {d['text']}" if d.get("title") else d["text"] for d in CORPUS]
    v = np.array([e.embedding for e in cli.embeddings.create(model="emb", input=texts).data],
                 dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    qv = np.array(cli.embeddings.create(model="emb", input=[q]).data[0].embedding, np.float32)
    qv /= np.linalg.norm(qv)
    sims = v @ qv
    cand = sorted(range(len(texts)), key=lambda i: (-sims[i], i))[:6]
    picked = []
    while len(picked) < 4:  # MMR: lambda * relevance - (1 - lambda) * redundancy
        left = [c for c in cand if c not in picked]
        score = [0.5 * sims[c] - 0.5 * max((float(v[c] @ v[p]) for p in picked), default=0.0)
                 for c in left]
        picked.append(left[int(np.argmax(score))])
    assert got == [texts[i] for i in picked]
    assert got != [texts[i] for i in cand[:4]]  # diversity changed the pick here
    write(prog, rag_program({"corpus": "corpus.jsonl", "mmr": 0.5}))
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2 and '"mmr" must be a number in (0, 1]' in r.stderr


class HostileRanker(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible stub whose rankings are nonsense; other prompts get an answer."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        rank = b"ranked_documents" in body
        text = ("[[ ## ranked_documents ## ]]\n]]]{not a ranking [0, 99, -1\n\n"
                "[[ ## completed ## ]]") if rank else \
            "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
        out = json.dumps({"choices": [{"message": {"content": text}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                    "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_rank_step_orders_passages_and_survives_hostile_rankings(tmp_path, corpus):
    prog = tmp_path / "rag.json"
    spec = rag_program({"corpus": "corpus.jsonl", "k": 3})
    spec["predictors"].insert(1, {"module": "rank", "k": 2})
    write(prog, spec)
    q = "What is the capital of France?"
    # the simulator ranks (its accuracy model), the answer sees the best 2 of the 3
    lines, chat = run_rag(tmp_path, prog, [q])
    pred = lines[0]["prediction"]
    assert len(pred["passages"]) == 2 and "warnings" not in pred
    rank_prompt = next(b for b in chat if "ranked_documents" in b["messages"][0]["content"])
    assert "[1] «Paris | Paris is the capital of France.»" in rank_prompt["messages"][-1]["content"]
    # a nonsense ranking keeps the retrieved order, with a warning; the record still succeeds
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileRanker)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        inp.write_text(json.dumps({"question": q}) + "\n")
        r = dspyc("run", prog, "--input", inp, "--output", out, "--base-url",
                  f"http://127.0.0.1:{srv.server_port}/v1", "--model", "m", "--cache", "off")
        assert r.returncode == 0, r.stderr
        line = json.loads(out.read_text())
        assert line["ok"], line
        plain = [json.loads(l) for l in subprocess.run(
            [DSPYC, "index", "search", corpus, "--corpus", "-k", "2", q], capture_output=True,
            text=True).stdout.splitlines()]
        assert line["prediction"]["passages"] == [p["text"] for p in plain]
        assert "rank step rank: part of the ranking names no document" in \
            line["prediction"]["warnings"][0]
    finally:
        srv.shutdown()


def test_rank_step_instructions_travel_in_state_files_as_dspy_writes_them(tmp_path, corpus):
    import dspy

    class RAG(dspy.Module):
        def __init__(self):
            super().__init__()
            self.retrieve = dspy.Retrieve(k=3)
            self.rank = dspy.Predict("query, documents -> ranked_documents")
            self.answer = dspy.Predict("passages: list[str], question -> answer")

    rag = RAG()
    tuned = "Put the passage naming the capital first; answer with numbers."
    rag.rank.signature = rag.rank.signature.with_instructions(tuned)
    assert [n for n, _ in rag.named_parameters()] == ["retrieve", "rank", "answer"]
    saved = tmp_path / "dspy_state.json"  # built as save() would (see the test above)
    saved.write_text(json.dumps({
        "retrieve": rag.retrieve.dump_state(), "rank": rag.rank.dump_state(json_mode=True),
        "answer": rag.answer.dump_state(json_mode=True),
        "metadata": {"dependency_versions": {"python": "3.11", "dspy": "3.3.1",
                                             "cloudpickle": "3.1"}}}))
    prog = tmp_path / "rag.json"
    spec = rag_program({"corpus": "corpus.jsonl", "k": 3})
    spec["predictors"].insert(1, {"module": "rank", "k": 2})
    write(prog, spec)
    rec = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", rec)
    inp, out, mine = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "mine.json"
    inp.write_text(json.dumps({"question": "What is the capital of France?"}) + "\n")
    r = dspyc("run", prog, "--state", saved, "--save-state", mine, "--input", inp, "--output",
              out, "--base-url", base, "--model", "m", "--cache", "off")
    assert r.returncode == 0, r.stderr
    bodies = [json.loads(l)["body"] for l in rec.read_text().splitlines()]
    rank_prompts = [b["messages"][0]["content"] for b in bodies
                    if isinstance(b, dict) and "ranked_documents" in b["messages"][0]["content"]]
    assert rank_prompts and all(tuned in p for p in rank_prompts)  # the loaded instructions
    got, want = json.loads(mine.read_text()), json.loads(saved.read_text())
    assert got["rank"].pop("k") == 2  # the step's k, beside DSPy's Predict state
    assert got == want
    back = RAG()
    back.load(str(mine))  # DSPy reads the file dspyc wrote
    assert back.rank.signature.instructions == tuned


@pytest.mark.parametrize("step, what", [
    ({"module": "rank", "k": 0}, '"k" must be an integer from 1 to 1000'),
    ({"module": "rank", "documents": "a b"}, '"documents" must be a field name'),
    ({"module": "rank", "corpus": "c"}, 'unknown key "corpus"'),
])
def test_bad_rank_step_names_file_and_key(tmp_path, corpus, step, what):
    prog = tmp_path / "rag.json"
    spec = rag_program({"corpus": "corpus.jsonl"})
    spec["predictors"].insert(1, step)
    write(prog, spec)
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2 and what in r.stderr and "rag.json" in r.stderr, r.stderr


def minilm(texts):
    """Unit vectors of `texts` from `dspyc embed` (the same in-process encoder)."""
    import numpy as np
    r = subprocess.run([DSPYC, "embed", *texts], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return np.array([json.loads(l)["embedding"] for l in r.stdout.splitlines()], np.float32)


@pytest.mark.parametrize("mmr", [None, 0.5])
def test_embed_rerank_orders_by_minilm_cosine_with_optional_mmr(tmp_path, corpus, mmr):
    import numpy as np
    qs = ["Which river flows through the French capital?",
          "What is the weather like in spring and winter?",
          "Is the capital of Germany cold in the day?"]
    step = {"corpus": "corpus.jsonl", "k": 3, "depth": 6, "rerank": "embed"}
    if mmr:
        step["mmr"] = mmr
    prog = tmp_path / "rag.json"
    write(prog, rag_program(step))
    lines, _ = run_rag(tmp_path, prog, qs)
    changed = 0
    for q, line in zip(qs, lines):
        got = line["prediction"]["passages"]
        # the oracle: BM25's top 6 (dspyc index search), re-ranked here from the encoder's
        # vectors
        cand = [json.loads(l)["text"] for l in subprocess.run(
            [DSPYC, "index", "search", corpus, "--corpus", "-k", "6", q], capture_output=True,
            text=True).stdout.splitlines()]
        v = minilm([q] + cand)
        sims = v[1:] @ v[0]
        order = sorted(range(len(cand)), key=lambda i: (-sims[i], i))
        if mmr:
            picked = []
            while len(picked) < 3:
                left = [c for c in order if c not in picked]
                score = [mmr * sims[c] - (1 - mmr) * max((float(v[1 + c] @ v[1 + p])
                                                          for p in picked), default=0.0)
                         for c in left]
                picked.append(left[int(np.argmax(score))])
            order = picked
        assert got == [cand[i] for i in order[:3]], q
        changed += got != cand[:3]
    assert changed  # the re-rank changed BM25's pick for some query


def test_embed_rerank_over_an_index_uses_its_stored_vectors(tmp_path, corpus):
    qs = ["Which river flows through the French capital?",
          "What is the weather like in spring and winter?",
          "Is the capital of Germany cold in the day?"]
    idx = tmp_path / "idx"
    r = dspyc("index", "build", corpus, "--out", idx, "--dense", "minilm", "--embed-model", MODEL)
    assert r.returncode == 0, r.stderr
    step = {"k": 3, "depth": 6, "rerank": "embed", "mmr": 0.5}
    by_corpus, by_index = tmp_path / "c.json", tmp_path / "i.json"
    write(by_corpus, rag_program({"corpus": "corpus.jsonl", **step}))  # embeds the candidates
    write(by_index, rag_program({"index": "idx", **step}))  # takes them from dense.vec
    want = [l["prediction"]["passages"] for l in run_rag(tmp_path, by_corpus, qs)[0]]
    got = [l["prediction"]["passages"] for l in run_rag(tmp_path, by_index, qs)[0]]
    assert got == want
    # the index's vectors are read: one of another corpus is refused, naming it
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(d) + "\n" for d in CORPUS[:5]))
    assert dspyc("index", "build", other, "--out", tmp_path / "idx2", "--dense", "minilm",
                 "--embed-model", MODEL).returncode == 0
    (idx / "dense.vec").write_bytes((tmp_path / "idx2" / "dense.vec").read_bytes())
    r = dspyc("run", by_index, "--input", "-", "--output", "-")
    assert r.returncode == 2 and "dense.vec" in r.stderr and "i.json" in r.stderr, r.stderr


@pytest.mark.parametrize("extra, what", [
    ({"rerank": "cross"}, '"rerank" must be "embed"'),
    ({"rerank": "embed", "depth": 0}, '"depth" must be an integer from 1 to 1000'),
    ({"rerank": "embed", "mmr": 2}, '"mmr" must be a number in (0, 1]'),
    ({"embed_model": "m"}, '"embed_model" must be left out without "rerank"'),
    ({"rerank": "embed", "embed_model": "no-such-model"}, "no-such-model"),
])
def test_bad_rerank_options_name_the_key(tmp_path, corpus, extra, what):
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"corpus": "corpus.jsonl", **extra}))
    r = dspyc("run", prog, "--input", "-", "--output", "-")
    assert r.returncode == 2 and what in r.stderr and "rag.json" in r.stderr, r.stderr


MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "models", "all-MiniLM-L6-v2")
TEXTS = [f"{d['title']} | {d['text']}" if d.get("title") else d["text"] for d in CORPUS]


def test_index_build_dense_minilm_maps_vectors_for_dense_and_hybrid(tmp_path, corpus):
    import numpy as np
    idx = tmp_path / "idx"
    r = dspyc("index", "build", corpus, "--out", idx, "--dense", "minilm", "--embed-model", MODEL)
    assert r.returncode == 0, r.stderr
    assert "embedded 8 passages" in r.stderr
    raw = (idx / "dense.vec").read_bytes()
    assert raw[:8] == b"DSPYDVEC" and len(raw) == 128 + 8 * 384 * 4
    stored = np.frombuffer(raw[128:], np.float32).reshape(8, 384)
    want = minilm(TEXTS)
    assert np.abs(stored - want).max() < 1e-6  # the same encoder, the index's order
    q = "Which river flows through the French capital?"
    qv = minilm([q])[0]
    dense_order = sorted(range(8), key=lambda i: (-float(stored[i] @ qv), i))
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"index": "idx", "mode": "dense", "k": 3}))
    lines, _ = run_rag(tmp_path, prog, [q])
    assert lines[0]["prediction"]["passages"] == [TEXTS[i] for i in dense_order[:3]]
    # hybrid: reciprocal-rank fusion of BM25's and the dense ranking
    bm25 = [json.loads(l)["text"] for l in subprocess.run(
        [DSPYC, "index", "search", idx, "-k", "50", q], capture_output=True,
        text=True).stdout.splitlines()]
    fused = {}
    for lst in (bm25, [TEXTS[i] for i in dense_order]):
        for rank, t in enumerate(lst):
            fused[t] = fused.get(t, 0.0) + 1.0 / (60 + rank + 1)
    order = sorted(fused, key=lambda t: (-fused[t], bm25.index(t) if t in bm25 else 99))
    write(prog, rag_program({"index": "idx", "mode": "hybrid", "k": 3}))
    lines, _ = run_rag(tmp_path, prog, [q])
    assert lines[0]["prediction"]["passages"] == order[:3]


def test_dense_minilm_errors_name_the_file_or_folder(tmp_path, corpus):
    idx = tmp_path / "idx"
    r = dspyc("index", "build", corpus, "--out", idx, "--dense", "bert")
    assert r.returncode == 2 and "--dense must be minilm" in r.stderr
    r = dspyc("index", "build", corpus, "--out", idx, "--dense", "minilm", "--embed-model",
              tmp_path / "no-model")
    assert r.returncode == 1 and f"model folder {tmp_path / 'no-model'} not found" in r.stderr
    prog = tmp_path / "rag.json"
    write(prog, rag_program({"index": "idx", "mode": "dense"}))

    def load_error():
        r = dspyc("run", prog, "--input", "-", "--output", "-")
        assert r.returncode == 2, r.stderr
        return r.stderr
    assert "dense.vec: cannot open the dense vectors" in load_error()  # built without --dense
    assert "--dense minilm" in load_error()
    assert dspyc("index", "build", corpus, "--out", idx, "--dense", "minilm").returncode == 0
    good = (idx / "dense.vec").read_bytes()
    (idx / "dense.vec").write_bytes(good[:5000])
    assert "dense.vec: the file size does not match its header (cut short?)" in load_error()
    (idx / "dense.vec").write_bytes(good[:-4] + b"\0\0\0\0")
    assert "dense.vec: checksum mismatch" in load_error()
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(d) + "\n" for d in CORPUS[::-1]))
    assert dspyc("index", "build", other, "--out", tmp_path / "idx2", "--dense",
                 "minilm").returncode == 0
    (idx / "dense.vec").write_bytes((tmp_path / "idx2" / "dense.vec").read_bytes())
    assert "dense.vec: built for another bm25.idx" in load_error()
    write(prog, rag_program({"index": "idx", "mode": "dense", "dense": "bert"}))
    assert '"dense" must be "minilm"' in load_error()
    write(prog, rag_program({"index": "idx", "mode": "dense", "embed_model": "nowhere"}))
    assert "nowhere" in load_error()
