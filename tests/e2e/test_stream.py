"""End-to-end tests of streamed LM calls: `dspyc predict --stream` against the simulator
prints the LM's deltas to stderr as they arrive and the prediction JSON to stdout; a stream
the simulator cuts short (--fail-truncate) fails with a structured error and stores nothing
in the cache; and a second identical streamed call with a cache directory makes no request
(the simulator's --record log is the witness) and replays the cached text."""
import json
import os
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

SIG = "question -> answer"
CACHE_ENV = ("DSPYC_CACHE", "DSPYC_CACHE_DIR", "DSPYC_REDIS_URL", "DSPYC_CACHE_TTL",
             "DSPYC_CACHE_NAMESPACE", "DSPYC_CACHE_MEM_SIZE", "DSPYC_CACHE_DISK_SIZE",
             "DSPYC_NO_CACHE", "DSPYC_NO_STORE", "DSPYC_REDIS_TIMEOUT_MS", "DSPYC_CONFIG",
             "DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL")


def dspyc(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in CACHE_ENV}
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def predict(base, *flags, question="What is the capital of France?"):
    return dspyc("predict", "--base-url", base, "--model", "openai/dspyc-sim", *flags, SIG,
                 f"question={question}")


def chat_requests(record):
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()
            if json.loads(line).get("path", "").endswith("/chat/completions")]


def test_stream_prints_deltas_and_prediction(tmp_path):
    record = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", record, "--tpot-ms", 1)
    r = predict(base, "--stream", "--cache", "off")
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    assert isinstance(pred["answer"], str) and pred["answer"]
    # The raw completion went to stderr, and parses to the same answer.
    assert "[[ ## answer ## ]]" in r.stderr and "[[ ## completed ## ]]" in r.stderr
    assert pred["answer"] in r.stderr
    reqs = chat_requests(record)
    assert len(reqs) == 1
    assert "stream" in json.dumps(reqs[0])
    # The same call without --stream predicts the same thing.
    plain = predict(base, "--cache", "off")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == pred


def test_truncated_stream_fails_and_caches_nothing(tmp_path):
    _, base = start_sim("--fail-truncate", "1.0")
    cache = ["--cache", "disk", "--cache-dir", tmp_path / "cache"]
    r = predict(base, "--stream", *cache)
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["class"] == "bad_response"
    assert "stream ended before [DONE]" in err["message"]
    stats = dspyc("cache", "stats", "--json", *cache)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["l3"]["entries"] == 0


def test_cached_stream_is_replayed_without_a_request(tmp_path):
    record = tmp_path / "requests.jsonl"
    _, base = start_sim("--record", record)
    cache = ["--cache", "disk", "--cache-dir", tmp_path / "cache"]
    first = predict(base, "--stream", *cache)
    assert first.returncode == 0, first.stderr
    assert len(chat_requests(record)) == 1
    second = predict(base, "--stream", *cache)
    assert second.returncode == 0, second.stderr
    assert len(chat_requests(record)) == 1  # answered from the disk cache
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert "[[ ## answer ## ]]" in second.stderr  # the replayed text
    # Streamed and plain calls share entries: a plain predict hits too.
    plain = predict(base, *cache)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == json.loads(first.stdout)
    assert len(chat_requests(record)) == 1
    stats = json.loads(dspyc("cache", "stats", "--json", *cache).stdout)
    assert stats["l3"]["entries"] == 1
