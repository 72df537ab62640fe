"""End-to-end tests of the semantic cache level (`--cache mem,disk,semantic`) through the
`dspyc` binary with the real embedding model and the simulator as the LM: paraphrases are
answered from the cache (the simulator's request log does not grow), negation and number
changes are not, partitions are never crossed (model, temperature, system prompt,
namespace), records survive a restart, missing model files degrade to a miss with one
warning, the per-request opt-out, and the counters in the run summary and `dspyc cache
stats`."""
import json
import os
import pathlib
import re

import pytest

from conftest import start_sim
from test_cache import chat_requests, dspyc, predictions, records, write_inputs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL = pathlib.Path(os.environ.get("DSPYC_EMBED_MODEL", REPO / "models" / "all-MiniLM-L6-v2"))

PARAPHRASE = ("How do I cancel my subscription?",
              "how do i cancel my subscription please?")


@pytest.fixture(autouse=True)
def _model():
    if not (MODEL / "model.safetensors").exists():
        pytest.fail(f"{MODEL} has no model.safetensors: run scripts/fetch-model.sh")


def run(base, tmp_path, questions, *flags, name="out", env=None):
    inp = write_inputs(tmp_path / f"{name}.in.jsonl", questions)
    out = tmp_path / f"{name}.jsonl"
    r = dspyc("run", "--signature", "question -> answer", "--input", inp, "--output", out,
              "--base-url", base, "--model", "openai/dspyc-sim", "--cache-dir",
              tmp_path / "cache", "--embed-model", MODEL, "--concurrency", 1, *flags, env=env)
    assert r.returncode == 0, r.stderr
    return r, out


def semantic_line(stderr):
    m = re.search(r"semantic: (\d+) lookups, (\d+) hits \(mean similarity ([0-9.]+)\), "
                  r"(\d+) below the threshold, (\d+) refused by the guards", stderr)
    assert m, stderr
    return {"lookups": int(m[1]), "hits": int(m[2]), "similarity": float(m[3]),
            "below": int(m[4]), "guarded": int(m[5])}


def test_paraphrase_hits_and_traps_miss(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "mem,disk,semantic")
    r, out = run(base, tmp_path, [PARAPHRASE[0]], *sem, name="first")
    assert chat_requests(rec) == 1
    first = predictions(out)[0]
    r, out = run(base, tmp_path, [PARAPHRASE[1]], *sem, name="para")
    assert chat_requests(rec) == 1, "a paraphrase went upstream"
    assert predictions(out)[0] == first
    s = semantic_line(r.stderr)
    assert s["hits"] == 1 and 0.8 <= s["similarity"] < 1.0, r.stderr
    assert "1 of 1 LM calls answered from the cache" in r.stderr
    # traps: a negation, a changed number, a changed date: each goes upstream
    r, _ = run(base, tmp_path, ["How do I not cancel my subscription?"], *sem, name="neg")
    assert chat_requests(rec) == 2
    assert "negation 1" in r.stderr, r.stderr
    r, _ = run(base, tmp_path, ["Track order 48213", "Track order 48231"], *sem, name="num")
    assert chat_requests(rec) == 4
    assert "number 1" in r.stderr, r.stderr
    r, _ = run(base, tmp_path, ["Is the store open on Saturday?", "Is the store open on Sunday?"],
               *sem, name="date")
    assert chat_requests(rec) == 6
    assert "date 1" in r.stderr, r.stderr
    # without the semantic level the paraphrase is a plain miss
    run(base, tmp_path, [PARAPHRASE[1] + "!"], "--cache", "mem,disk", name="exact")
    assert chat_requests(rec) == 7


@pytest.mark.parametrize("change", ["model", "temperature", "system", "namespace"])
def test_never_across_partitions(tmp_path, change):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "mem,disk,semantic")
    run(base, tmp_path, [PARAPHRASE[0]], *sem, name="first")
    other = {"model": ("--model", "openai/dspyc-sim-2"),
             "temperature": ("--temperature", "0.7"),
             "system": ("--instructions", "Answer in French."),
             "namespace": ("--cache-namespace", "tenant-b")}[change]
    r, _ = run(base, tmp_path, [PARAPHRASE[1]], *sem, *other, name="other")
    assert chat_requests(rec) == 2, f"a semantic hit crossed the {change} partition"
    assert semantic_line(r.stderr)["hits"] == 0


def test_restart_keeps_records_and_stats(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "disk,semantic")  # no memory level: the answer comes from disk
    run(base, tmp_path, [PARAPHRASE[0]], *sem, name="first")
    assert (tmp_path / "cache" / "semantic.log").exists()
    st = dspyc("cache", "stats", "--json", "--cache", "disk,semantic", "--cache-dir",
               tmp_path / "cache", "--embed-model", MODEL)
    assert st.returncode == 0, st.stderr
    j = json.loads(st.stdout)
    assert j["semantic"]["entries"] == 1 and j["semantic"]["partitions"] == 1, j
    r, _ = run(base, tmp_path, [PARAPHRASE[1]], *sem, name="para")
    assert chat_requests(rec) == 1
    assert semantic_line(r.stderr)["hits"] == 1
    txt = dspyc("cache", "stats", "--cache", "disk,semantic", "--cache-dir", tmp_path / "cache")
    assert re.search(r"semantic: .* 1 records .* in 1 partitions", txt.stdout), txt.stdout
    # clearing the disk level takes the records with it
    assert dspyc("cache", "clear", "--cache", "disk,semantic", "--cache-dir",
                 tmp_path / "cache").returncode == 0
    r, _ = run(base, tmp_path, [PARAPHRASE[1] + " now"], *sem, name="after")
    assert chat_requests(rec) == 2


def test_missing_model_degrades_to_a_miss(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    empty = tmp_path / "no-model"
    empty.mkdir()
    inp = write_inputs(tmp_path / "in.jsonl", list(PARAPHRASE))
    out = tmp_path / "out.jsonl"
    r = dspyc("run", "--signature", "question -> answer", "--input", inp, "--output", out,
              "--base-url", base, "--model", "openai/dspyc-sim", "--cache-dir", tmp_path / "c",
              "--cache", "mem,semantic", "--embed-model", empty, "--concurrency", 1)
    assert r.returncode == 0, r.stderr
    assert len(predictions(out)) == 2
    assert chat_requests(rec) == 2
    warnings = [l for l in r.stderr.splitlines() if "semantic cache off" in l]
    assert len(warnings) == 1, r.stderr
    assert "model.safetensors" in warnings[0] or "vocab.txt" in warnings[0], r.stderr
    assert "model unavailable" in r.stderr


def test_no_cache_skips_the_semantic_lookup(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "mem,disk,semantic")
    run(base, tmp_path, [PARAPHRASE[0]], *sem, name="first")
    r, _ = run(base, tmp_path, [PARAPHRASE[1]], *sem, "--no-cache", name="nc")
    assert chat_requests(rec) == 2
    assert semantic_line(r.stderr)["lookups"] == 0


def test_threshold_flag_and_bad_values(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "mem,disk,semantic")
    run(base, tmp_path, [PARAPHRASE[0]], *sem, name="first")
    r, _ = run(base, tmp_path, [PARAPHRASE[1]], *sem, "--semantic-threshold", "0.999",
               name="strict")
    assert chat_requests(rec) == 2, "the strict threshold still served the paraphrase"
    assert semantic_line(r.stderr)["below"] == 1
    # the same from the environment and from the config file
    r, _ = run(base, tmp_path, [PARAPHRASE[1] + " thanks"], *sem, name="env",
               env={"DSPYC_SEMANTIC_THRESHOLD": "0.999"})
    assert chat_requests(rec) == 3 and semantic_line(r.stderr)["below"] == 1
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"semantic_threshold": 0.999}))
    r, _ = run(base, tmp_path, [PARAPHRASE[1] + " thank you"], *sem, "--cache-config", conf,
               name="conf")
    assert chat_requests(rec) == 4 and semantic_line(r.stderr)["below"] == 1
    r, _ = run(base, tmp_path, ["How do I cancel my subscription, please?"], *sem,
               name="default")
    assert chat_requests(rec) == 4 and semantic_line(r.stderr)["hits"] == 1
    bad = dspyc("run", "--signature", "question -> answer", "--input", tmp_path / "first.in.jsonl",
                "--output", tmp_path / "x.jsonl", "--base-url", base, "--model",
                "openai/dspyc-sim", "--cache", "mem,semantic", "--semantic-threshold", "1.5")
    assert bad.returncode != 0 and "--semantic-threshold" in bad.stderr, bad.stderr
    only = dspyc("run", "--signature", "question -> answer", "--input",
                 tmp_path / "first.in.jsonl", "--output", tmp_path / "y.jsonl", "--base-url",
                 base, "--model", "openai/dspyc-sim", "--cache", "semantic")
    assert only.returncode != 0 and "needs an exact level" in only.stderr, only.stderr


def test_proxy_answers_a_paraphrase_with_the_semantic_header(tmp_path):
    import httpx
    from conftest import start_serve
    rec = tmp_path / "rec.jsonl"
    _, sim = start_sim("--record", rec)
    _, srv = start_serve("--upstream", sim, "--cache", "mem,semantic", "--embed-model", MODEL)

    def ask(text, headers=None):
        r = httpx.post(srv + "/chat/completions", headers=headers or {}, timeout=30,
                       json={"model": "m", "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200, r.text
        return r

    first = ask(PARAPHRASE[0])
    assert first.headers["x-dspyc-cache"] == "miss"
    para = ask(PARAPHRASE[1])
    assert para.headers["x-dspyc-cache"] == "semantic", para.headers
    assert 0.85 <= float(para.headers["x-dspyc-cache-similarity"]) < 1.0
    assert para.json()["choices"][0]["message"]["content"] == \
        first.json()["choices"][0]["message"]["content"]
    assert chat_requests(rec) == 1
    # a number change is refused by the guards; the opt-out header skips the level
    assert ask("Track order 48213").headers["x-dspyc-cache"] == "miss"
    assert ask("Track order 48231").headers["x-dspyc-cache"] == "miss"
    opt = ask(PARAPHRASE[1] + " thanks", {"x-dspyc-cache": "no-semantic"})
    assert opt.headers["x-dspyc-cache"] == "miss"
    assert chat_requests(rec) == 4


def test_proxy_streams_a_paraphrase_from_the_semantic_level(tmp_path):
    from openai import OpenAI
    from conftest import start_serve
    rec = tmp_path / "rec.jsonl"
    _, sim = start_sim("--record", rec, "--tpot-ms", 1)
    _, srv = start_serve("--upstream", sim, "--cache", "mem,semantic", "--embed-model", MODEL)
    cl = OpenAI(base_url=srv, api_key="k", max_retries=0, timeout=30)

    def stream(text, **kw):
        with cl.chat.completions.with_streaming_response.create(
                model="m", messages=[{"role": "user", "content": text}], stream=True,
                **kw) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: {")]
            return r.headers, chunks

    def text_of(chunks):
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])

    # a streamed miss: streamed live, and stored in the semantic level on its clean finish
    h, first = stream(PARAPHRASE[0])
    assert h["x-dspyc-cache"] == "miss" and text_of(first)
    assert chat_requests(rec) == 1
    # its paraphrase, streamed: replayed as chunks from the near-duplicate's entry
    h, para = stream(PARAPHRASE[1], stream_options={"include_usage": True})
    assert h["x-dspyc-cache"] == "semantic", dict(h)
    assert 0.85 <= float(h["x-dspyc-cache-similarity"]) < 1.0
    assert len([c for c in para if c["choices"]]) >= 2  # chunks, not one body
    assert text_of(para) == text_of(first)
    assert para[-1]["usage"]["completion_tokens"] > 0
    # and not streamed: the same record answers
    plain = cl.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": PARAPHRASE[1] + " thanks"}])
    assert plain.headers["x-dspyc-cache"] == "semantic"
    assert plain.parse().choices[0].message.content == text_of(first)
    assert chat_requests(rec) == 1
    # a number change is refused by the guards, streamed too; the opt-out header skips it
    assert stream("Track order 48213")[0]["x-dspyc-cache"] == "miss"
    assert stream("Track order 48231")[0]["x-dspyc-cache"] == "miss"
    h, _ = stream(PARAPHRASE[1] + " now", extra_headers={"x-dspyc-cache": "no-semantic"})
    assert h["x-dspyc-cache"] == "miss"
    assert chat_requests(rec) == 4


def test_predict_stream_replays_a_semantic_hit(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec, "--tpot-ms", 1)
    cache = ("--cache", "mem,disk,semantic", "--cache-dir", tmp_path / "cache")

    def predict(question):
        r = dspyc("predict", "--stream", "--base-url", base, "--model", "openai/dspyc-sim",
                  *cache, "--embed-model", MODEL, "question -> answer", f"question={question}")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout), r.stderr

    first, err = predict(PARAPHRASE[0])
    assert chat_requests(rec) == 1 and "[[ ## answer ## ]]" in err
    st = json.loads(dspyc("cache", "stats", "--json", "--cache", "disk,semantic",
                          "--cache-dir", tmp_path / "cache").stdout)
    assert st["semantic"]["entries"] == 1, st  # the streamed miss left its record
    para, err = predict(PARAPHRASE[1])
    assert chat_requests(rec) == 1, "a streamed paraphrase went upstream"
    assert para == first
    assert "[[ ## answer ## ]]" in err and first["answer"] in err  # the replayed text
    predict("Track order 48213")
    predict("Track order 48231")
    assert chat_requests(rec) == 3, "a number change was served from the semantic level"


def test_records_go_with_their_evicted_exact_entries(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    # L1 alone holds the answers: 16 entries (one per shard), 40 questions
    qs = [f"What is the capital of {c}?" for c in (
        "France", "Spain", "Portugal", "Italy", "Germany", "Austria", "Poland", "Hungary",
        "Greece", "Turkey", "Egypt", "Morocco", "Kenya", "Nigeria", "Ghana", "Brazil",
        "Argentina", "Chile", "Peru", "Colombia", "Mexico", "Canada", "Japan", "China",
        "India", "Pakistan", "Thailand", "Vietnam", "Indonesia", "Australia", "Norway",
        "Sweden", "Finland", "Denmark", "Ireland", "Iceland", "Belgium", "Holland",
        "Ukraine", "Romania")]
    r, _ = run(base, tmp_path, qs, "--cache", "mem,semantic", "--cache-mem-size", "16384")
    m = re.search(r"semantic: .*?(\d+) records .*?(\d+) dropped with their exact entries",
                  r.stderr)
    assert m, r.stderr
    records, dropped = int(m[1]), int(m[2])
    assert records + dropped == 40 and records < 40, r.stderr
    # L1 over L3: L1's evictions leave the records, L3 answers them
    r, _ = run(base, tmp_path, qs, "--cache", "mem,disk,semantic", "--cache-mem-size", "16",
               name="disk")
    assert re.search(r"semantic: .*?40 records", r.stderr), r.stderr
    # `cache clear` empties the level with the disk entries
    st = json.loads(dspyc("cache", "stats", "--json", "--cache", "disk,semantic",
                          "--cache-dir", tmp_path / "cache").stdout)
    assert st["semantic"]["entries"] == 40
    assert dspyc("cache", "clear", "--cache", "disk,semantic",
                 "--cache-dir", tmp_path / "cache").returncode == 0
    st = json.loads(dspyc("cache", "stats", "--json", "--cache", "disk,semantic",
                          "--cache-dir", tmp_path / "cache").stdout)
    assert st["semantic"]["entries"] == 0 and st["l3"]["entries"] == 0


def test_damaged_log_tail_is_cut_and_expired_entries_take_their_records(tmp_path):
    import time
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "disk,semantic")
    run(base, tmp_path, [PARAPHRASE[0]], *sem, name="first")
    log = tmp_path / "cache" / "semantic.log"
    size = log.stat().st_size
    with log.open("ab") as f:
        f.write(b"DSEM\x01torn record")  # a crash in the middle of an append
    r, _ = run(base, tmp_path, [PARAPHRASE[1]], *sem, name="para")
    assert f"damaged record at byte {size}" in r.stderr, r.stderr
    assert chat_requests(rec) == 1 and semantic_line(r.stderr)["hits"] == 1
    assert log.stat().st_size == size
    # an exact entry that expires takes its record with it: the next paraphrase goes upstream
    run(base, tmp_path, ["How can I reset my password?"], *sem, "--cache-ttl", "1", name="ttl")
    assert chat_requests(rec) == 2
    time.sleep(1.5)
    r, _ = run(base, tmp_path, ["how can i reset my password please"], *sem, name="late")
    assert chat_requests(rec) == 3, "an expired entry answered through its record"
    assert re.search(r"semantic: 1 lookups, 0 hits", r.stderr), r.stderr
    st = json.loads(dspyc("cache", "stats", "--json", "--cache", "disk,semantic",
                          "--cache-dir", tmp_path / "cache").stdout)
    # the first question's and the late one's; the expired one's record is gone
    assert st["semantic"]["entries"] == 2, st


def test_guards_and_projection_flags(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "mem,disk,semantic")
    run(base, tmp_path, ["Track order 48213"], *sem, name="a")
    # without the guards, cosine 0.97 serves the other order's answer: what they prevent
    r, _ = run(base, tmp_path, ["Track order 48231"], *sem, "--semantic-guards", "none",
               name="b")
    assert chat_requests(rec) == 1 and semantic_line(r.stderr)["hits"] == 1
    r, _ = run(base, tmp_path, ["Track order 48321"], *sem, "--semantic-guards",
               "negation,date", name="c")
    assert chat_requests(rec) == 1
    r, _ = run(base, tmp_path, ["Track order 43821"], *sem, "--semantic-guards", "number",
               name="d")
    assert chat_requests(rec) == 2 and "number 1" in r.stderr
    # `all` embeds every message and drops the system prompt from the partition
    run(base, tmp_path, [PARAPHRASE[0]], *sem, "--instructions", "Answer briefly.",
        "--semantic-projection", "all", name="e")
    assert chat_requests(rec) == 3
    r, _ = run(base, tmp_path, [PARAPHRASE[1]], *sem, "--instructions", "Answer concisely.",
               name="f")
    assert chat_requests(rec) == 4, "the default projection crossed a system prompt"
    r, _ = run(base, tmp_path, [PARAPHRASE[1] + " thanks"], *sem, "--instructions",
               "Answer concisely.", "--semantic-projection", "all", name="g")
    assert chat_requests(rec) == 4 and semantic_line(r.stderr)["hits"] == 1, r.stderr
    for flag, value in (("--semantic-guards", "numbers"), ("--semantic-projection", "last")):
        bad = dspyc("run", "--signature", "question -> answer", "--input",
                    tmp_path / "a.in.jsonl", "--output", tmp_path / "x.jsonl", "--base-url",
                    base, "--model", "openai/dspyc-sim", "--cache", "mem,semantic", flag, value)
        assert bad.returncode != 0 and flag in bad.stderr and value in bad.stderr, bad.stderr



def test_substitution_guard_refuses_another_verb(tmp_path):
    # same frame, another action: cosine 0.89, past the threshold and the other guards
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "mem,disk,semantic")
    run(base, tmp_path, ["I want to install a ceiling fan, how do I do that?"], *sem, name="a")
    assert chat_requests(rec) == 1
    r, _ = run(base, tmp_path, ["I want to connect a ceiling fan, how do I do that?"], *sem,
               name="b")
    assert chat_requests(rec) == 2, "another verb was answered with the first one's answer"
    assert semantic_line(r.stderr)["guarded"] == 1 and "substitution 1" in r.stderr, r.stderr
    # switched off, the same kind of pair is served from the first answer
    r, _ = run(base, tmp_path, ["I want to mount a ceiling fan, how do I do that?"], *sem,
               "--semantic-guards", "number,negation,date,entity,scope,antonym", name="c")
    assert chat_requests(rec) == 2 and semantic_line(r.stderr)["hits"] == 1, r.stderr


CAPITALS = ["What is the capital of France?", "What is the capital of Kenya?",
            "What is the capital of Peru?", "What is the capital of Japan?",
            "What is the capital of Norway?"]


def sem_stats(tmp_path, *flags):
    st = dspyc("cache", "stats", "--json", "--cache", "disk,semantic", "--cache-dir",
               tmp_path / "cache", "--embed-model", MODEL, *flags)
    assert st.returncode == 0, st.stderr
    return json.loads(st.stdout)["semantic"]


def test_index_min_flag_puts_the_partition_behind_an_hnsw_index(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", rec)
    sem = ("--cache", "disk,semantic")
    # default threshold (20000 records): these few are searched exactly, no index file
    run(base, tmp_path, CAPITALS[:3], *sem, name="plain")
    assert not list((tmp_path / "cache").glob("semantic-*.hnsw"))
    assert sem_stats(tmp_path)["index"]["nodes"] == 0
    # from 2 records: the partition gets its index, saved beside the log on exit
    r, _ = run(base, tmp_path, CAPITALS[3:], *sem, "--semantic-index-min", "2", name="idx")
    assert len(list((tmp_path / "cache").glob("semantic-*.hnsw"))) == 1
    j = sem_stats(tmp_path, "--semantic-index-min", "2")
    assert j["index"]["nodes"] == 5 and j["index"]["loaded"] == 1, j
    assert j["index"]["tail_added"] == 0, j  # loaded, not rebuilt
    # a paraphrase is answered through the index (the summary says so)
    r, _ = run(base, tmp_path, ["What is the capital city of Peru?"], *sem,
               "--semantic-index-min", "2", name="para")
    assert chat_requests(rec) == 5, "the paraphrase went upstream"
    assert semantic_line(r.stderr)["hits"] == 1
    assert re.search(r"index: 5 records in HNSW indexes, 1 lookups through them", r.stderr), \
        r.stderr
    # the same from the environment; "never" keeps the exact scan
    r, _ = run(base, tmp_path, ["What is the capital city of Japan?"], *sem, name="env",
               env={"DSPYC_SEMANTIC_INDEX_MIN": "2"})
    assert "1 lookups through them" in r.stderr, r.stderr
    r, _ = run(base, tmp_path, ["What is the capital city of Kenya?"], *sem,
               "--semantic-index-min", "never", name="never")
    assert semantic_line(r.stderr)["hits"] == 1 and "through them" not in r.stderr, r.stderr
    bad = dspyc("run", "--signature", "question -> answer", "--input", tmp_path / "idx.in.jsonl",
                "--output", tmp_path / "x.jsonl", "--base-url", base, "--model",
                "openai/dspyc-sim", "--cache", "mem,semantic", "--semantic-index-min", "0")
    assert bad.returncode != 0 and "--semantic-index-min" in bad.stderr, bad.stderr


def test_semantic_size_flag_bounds_the_records(tmp_path):
    _, base = start_sim()
    sem = ("--cache", "disk,semantic")
    run(base, tmp_path, CAPITALS, *sem, name="all")
    j = sem_stats(tmp_path)
    assert j["entries"] == 5 and j["evictions"] == 0, j
    # about two records' worth: the oldest go
    run(base, tmp_path, ["Where is Lima?"], *sem, "--semantic-size", "4K", name="small")
    j = sem_stats(tmp_path, "--semantic-size", "4K")
    assert 1 <= j["entries"] <= 2 and j["bytes"] <= 4096, j
    bad = dspyc("cache", "stats", "--cache", "disk,semantic", "--cache-dir", tmp_path / "cache",
                "--semantic-size", "lots")
    assert bad.returncode != 0 and "--semantic-size" in bad.stderr, bad.stderr
