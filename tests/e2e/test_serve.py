"""End-to-end tests of `dspyc serve`, the OpenAI-compatible caching proxy: the real `openai`
SDK and real DSPy through the proxy to `dspyc sim`. Answers must equal going direct; a repeat
must be a cache hit the simulator never sees (its /admin/stats request count stays put);
streams are teed and replayed; LiteLLM's cache controls, single-flight, fallbacks, upstream
errors, overload, bearer tokens with tenant namespaces, Prometheus metrics (parsed by
prometheus_client), the dashboard in headless Chromium, the profiler, the access log and bad
requests each get their effect checked."""
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from conftest import DSPYC, start_sim
from conftest import start_serve as _start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MSG = [{"role": "user", "content": "Tell me about rivers and mountains"}]


def root(base):
    return base[: -len("/v1")]


def client(base, key="sk-test"):
    return OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)


_records = {}


def recorded_sim(*args):
    """A simulator that records every request it receives (--record)."""
    path = tempfile.mktemp(suffix=".jsonl")
    _, base = start_sim("--record", path, *args)
    _records[base] = path
    return base


def sim_requests(sim_base):
    """Requests the simulator received on its /v1 routes, from its recording."""
    time.sleep(0.05)
    with open(_records[sim_base]) as f:
        return sum(1 for l in f if json.loads(l)["path"].startswith("/v1/"))


def start_serve(*args):
    """The proxy; the tests' environment turns caching off (DSPYC_CACHE=off), so memory
    caching is asked for unless the test names its own --cache."""
    if "--cache" not in args:
        args = (*args, "--cache", "mem")
    return _start_serve(*args)


def proxy(*args, sim_args=()):
    sim = recorded_sim(*sim_args)
    _, srv = start_serve("--upstream", sim, *args)
    return sim, srv


def post(base, body, headers=None, path="/chat/completions"):
    return httpx.post(base + path, json=body, headers=headers or {}, timeout=30)


def chat(model="m", content="Tell me about rivers and mountains", **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


def assert_openai_error(r, status, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert {"message", "type", "code"} <= set(err) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def metrics(base, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(root(base) + "/metrics", headers=headers).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out, text


def total(m, name, **labels):
    return sum(v for l, v in m.get(name, []) if all(l.get(k) == x for k, x in labels.items()))


# ---- the proxy ---------------------------------------------------------------------------------


def test_openai_sdk_answers_equal_direct_and_a_repeat_is_a_hit():
    sim, srv = proxy()
    direct = client(sim).chat.completions.create(model="m", messages=MSG, n=2, temperature=0.7)
    n0 = sim_requests(sim)
    raw = client(srv).chat.completions.with_raw_response.create(model="m", messages=MSG, n=2,
                                                                temperature=0.7)
    first = raw.parse()
    assert raw.headers["x-dspyc-cache"] == "miss"
    assert [c.message.content for c in first.choices] == [c.message.content for c in direct.choices]
    assert len(first.choices) == 2 and first.usage.total_tokens == direct.usage.total_tokens
    assert sim_requests(sim) == n0 + 1
    raw = client(srv).chat.completions.with_raw_response.create(model="m", messages=MSG, n=2,
                                                                temperature=0.7)
    assert raw.headers["x-dspyc-cache"] == "hit"
    assert raw.parse().model_dump() == first.model_dump()
    assert sim_requests(sim) == n0 + 1  # the simulator never saw the repeat
    # A sampling parameter is part of the key: another temperature is a miss.
    raw = client(srv).chat.completions.with_raw_response.create(model="m", messages=MSG, n=2,
                                                                temperature=0.2)
    assert raw.headers["x-dspyc-cache"] == "miss" and sim_requests(sim) == n0 + 2


def test_tools_and_response_format_pass_through():
    sim, srv = proxy()
    rec = _records[sim]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = chat(tools=tools, response_format={"type": "json_object"},
                cache={"ttl": 60})
    assert post(srv, body).status_code == 200
    sent = json.loads(open(rec).read().splitlines()[-1])["body"]
    assert sent["tools"] == tools and sent["response_format"] == {"type": "json_object"}
    assert "cache" not in sent  # the proxy's own controls never reach the upstream


def test_dspy_through_the_proxy_equals_direct_and_repeats_are_hits():
    import dspy
    sim, srv = proxy()
    sig = "question -> answer"
    with dspy.context(lm=dspy.LM("openai/m", api_base=sim, api_key="x", cache=False)):
        want = dspy.Predict(sig)(question="What is the capital of France?").answer
    n0 = sim_requests(sim)
    with dspy.context(lm=dspy.LM("openai/m", api_base=srv, api_key="x", cache=False)):
        got = dspy.Predict(sig)(question="What is the capital of France?").answer
        again = dspy.Predict(sig)(question="What is the capital of France?").answer
    assert got == want == again
    assert sim_requests(sim) == n0 + 1


def test_streams_are_teed_cached_and_replayed():
    sim, srv = proxy()
    cl = client(srv)
    first = "".join(c.choices[0].delta.content or "" for c in cl.chat.completions.create(
        model="m", messages=MSG, stream=True) if c.choices)
    n0 = sim_requests(sim)
    with cl.chat.completions.with_streaming_response.create(
            model="m", messages=MSG, stream=True, stream_options={"include_usage": True}) as r:
        assert r.headers["x-dspyc-cache"] == "hit"
        chunks = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith("data: {")]
    replay = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert replay == first and first
    assert chunks[-1]["usage"]["completion_tokens"] > 0  # asked for: the usage chunk comes last
    raw = cl.chat.completions.with_raw_response.create(model="m", messages=MSG)
    assert raw.headers["x-dspyc-cache"] == "hit" and raw.parse().choices[0].message.content == first
    assert sim_requests(sim) == n0
    direct = "".join(c.choices[0].delta.content or "" for c in client(sim).chat.completions.create(
        model="m", messages=MSG, stream=True) if c.choices)
    assert direct == first


def test_cache_controls_in_body_and_headers():
    sim, srv = proxy()
    assert post(srv, chat()).headers["x-dspyc-cache"] == "miss"
    n = sim_requests(sim)
    assert post(srv, chat(cache={"no-cache": True})).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat(), {"Cache-Control": "no-cache"}).headers["x-dspyc-cache"] == "miss"
    assert sim_requests(sim) == n + 2
    # no-store: answered, not kept
    assert post(srv, chat("b", cache={"no-store": True})).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("b")).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("b")).headers["x-dspyc-cache"] == "hit"
    assert post(srv, chat("c"), {"Cache-Control": "no-store"}).status_code == 200
    assert post(srv, chat("c")).headers["x-dspyc-cache"] == "miss"
    # namespace: entries kept apart
    assert post(srv, chat(cache={"namespace": "t1"})).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat(cache={"namespace": "t1"})).headers["x-dspyc-cache"] == "hit"
    assert post(srv, chat(), {"x-dspyc-cache-namespace": "t1"}).headers["x-dspyc-cache"] == "hit"
    # ttl: the entry expires
    assert post(srv, chat("f")).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("g")).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("d", cache={"ttl": 1})).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("d")).headers["x-dspyc-cache"] == "hit"
    assert post(srv, chat("e"), {"x-dspyc-cache-ttl": "1"}).headers["x-dspyc-cache"] == "miss"
    time.sleep(2.2)
    assert post(srv, chat("d")).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("e")).headers["x-dspyc-cache"] == "miss"
    # s-maxage: an entry older than the reader accepts is not a hit
    assert post(srv, chat("f", cache={"s-maxage": 600})).headers["x-dspyc-cache"] == "hit"
    assert post(srv, chat("f", cache={"s-maxage": 1})).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat("f", cache={"s-maxage": 1})).headers["x-dspyc-cache"] == "hit"  # refilled
    assert post(srv, chat("g"), {"Cache-Control": "s-maxage=1"}).headers["x-dspyc-cache"] == "miss"
    # bad controls are named
    assert "cache" in assert_openai_error(post(srv, chat(cache={"ttl": -1})), 400)["message"]
    assert_openai_error(post(srv, chat(cache={"bogus": 1})), 400, "cache")
    assert_openai_error(post(srv, chat(cache=5)), 400, "cache")


def test_identical_concurrent_requests_make_one_upstream_call():
    sim, srv = proxy(sim_args=("--latency-ms", 400))
    n0 = sim_requests(sim)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda i: post(srv, chat("shared", stream=bool(i % 2))), range(8)))
    assert all(r.status_code == 200 for r in rs)
    assert sim_requests(sim) == n0 + 1
    texts = {r.json()["choices"][0]["message"]["content"] for r in rs if not
             r.headers["content-type"].startswith("text/event-stream")}
    assert len(texts) == 1
    m, _ = metrics(srv)
    # The seven others waited on the one call, or (a client the loaded machine started after it
    # ended) found its answer in the cache: either way none went upstream.
    coalesced = total(m, "dspyc_coalesced_total")
    hits = total(m, "dspyc_cache_lookups_total", result="hit")
    assert coalesced >= 1 and coalesced + hits == 7


def test_embeddings_and_models():
    sim, srv = proxy()
    body = {"model": "e", "input": ["abc", "def"]}
    direct = post(sim, body, path="/embeddings").json()
    r = post(srv, body, path="/embeddings")
    assert r.headers["x-dspyc-cache"] == "miss" and r.json()["data"] == direct["data"]
    n = sim_requests(sim)
    r = post(srv, body, path="/embeddings")
    assert r.headers["x-dspyc-cache"] == "hit" and r.json()["data"] == direct["data"]
    assert sim_requests(sim) == n
    assert [m.id for m in client(srv).models.list()] == [m.id for m in client(sim).models.list()]
    assert_openai_error(post(srv, {"model": "e"}, path="/embeddings"), 400, "input")


# ---- several upstreams -----------------------------------------------------------------------


def write_config(path, ups):
    with open(path, "w") as f:
        json.dump({"upstreams": ups}, f)
    return path


def test_config_routes_by_model_aliases_and_falls_back(tmp_path):
    rec = tmp_path / "b.jsonl"
    _, bad = start_sim("--fail-500", 1)
    _, good = start_sim("--record", rec)
    cfg = write_config(tmp_path / "c.json", [
        {"name": "primary", "base_url": bad, "models": ["m"], "aliases": {"fast": "m"},
         "max_retries": 0, "fallbacks": ["backup"]},
        {"name": "backup", "base_url": good, "models": ["x"], "aliases": {"fast": "m-backup"}},
    ])
    _, srv = start_serve("--config", cfg)
    r = post(srv, chat("m"))
    assert r.status_code == 200, r.text
    r = post(srv, chat("fast"))
    assert r.status_code == 200
    sent = [json.loads(l)["body"]["model"] for l in rec.read_text().splitlines()]
    assert sent == ["m", "m-backup"]  # the fallback gets its own alias's name
    assert sorted(m.id for m in client(srv).models.list()) == ["fast", "m", "x"]
    assert_openai_error(post(srv, chat("nope")), 404, "model_not_found")
    m, _ = metrics(srv)
    assert total(m, "dspyc_fallbacks_total") == 2
    assert total(m, "dspyc_requests_total", upstream="backup", status="200") == 2


def test_upstream_errors_reach_the_client_with_their_status(tmp_path):
    _, s429 = start_sim("--fail-429", 1)
    _, srv = start_serve("--upstream", s429, "--max-retries", 0)
    r = post(srv, chat())
    err = assert_openai_error(r, 429)
    assert "simulat" in err["message"].lower() or err["type"]
    _, srv2 = start_serve("--upstream", "http://127.0.0.1:1/v1", "--max-retries", 0)
    assert_openai_error(post(srv2, chat()), 502, "upstream_unreachable")
    # retries: a flaky upstream is retried until it answers
    _, flaky = start_sim("--fail-500", 0.5, "--seed", 1)
    _, srv3 = start_serve("--upstream", flaky, "--max-retries", 8)
    assert all(post(srv3, chat(f"q{i}")).status_code == 200 for i in range(6))
    m, _ = metrics(srv3)
    assert total(m, "dspyc_upstream_retries_total") >= 1


def test_config_errors_name_file_and_field(tmp_path):
    cfg = write_config(tmp_path / "c.json", [{"name": "a", "base_url": "ftp://x"}])
    p = subprocess.run([DSPYC, "serve", "--config", cfg], capture_output=True, text=True)
    assert p.returncode == 1 and "upstreams[0].base_url" in p.stderr and "c.json" in p.stderr
    cfg = write_config(tmp_path / "d.json", [{"name": "a", "base_url": "http://x/v1", "rpn": 1}])
    p = subprocess.run([DSPYC, "serve", "--config", cfg], capture_output=True, text=True)
    assert p.returncode == 1 and "upstreams[0].rpn" in p.stderr and "unknown key" in p.stderr
    (tmp_path / "e.json").write_text("{\"upstreams\": [\n  {,}]}")
    p = subprocess.run([DSPYC, "serve", "--config", tmp_path / "e.json"], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "e.json:2:" in p.stderr
    p = subprocess.run([DSPYC, "serve"], capture_output=True, text=True)
    assert p.returncode == 2 and "--upstream" in p.stderr


def test_rate_limit_per_upstream_makes_calls_wait(tmp_path):
    _, sim = start_sim()
    cfg = write_config(tmp_path / "c.json", [{"name": "slow", "base_url": sim, "rpm": 120}])
    _, srv = start_serve("--config", cfg, "--cache", "off")
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda i: post(srv, chat(f"r{i}")), range(4)))
    assert all(r.status_code == 200 for r in rs)
    assert time.monotonic() - t0 >= 0.9  # 2 per second
    m, _ = metrics(srv)
    assert total(m, "dspyc_upstream_ratelimit_waits_total") >= 1


def test_upstream_concurrency_caps_calls_on_the_wire():
    sim, srv = proxy("--upstream-concurrency", 2, "--cache", "off",
                     sim_args=("--latency-ms", 300))
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(lambda i: post(srv, chat(f"u{i}")), range(6)))
    assert all(r.status_code == 200 for r in rs)
    assert time.monotonic() - t0 >= 0.85  # 6 calls, 2 at a time, 300 ms each
    stats = httpx.get(root(sim) + "/admin/stats").json()
    assert stats["requests"] >= 6
    m, _ = metrics(srv)
    assert total(m, "dspyc_upstream_ratelimit_waits_total") >= 1


def test_overload_answers_429_with_retry_after():
    sim, srv = proxy("--max-in-flight", 2, "--cache", "off", sim_args=("--latency-ms", 500))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(lambda i: post(srv, chat(f"o{i}")), range(6)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 2 and 429 in codes
    r429 = next(r for r in rs if r.status_code == 429)
    assert r429.headers["retry-after"] == "1" and r429.json()["error"]["code"] == "overloaded"
    assert post(srv, chat("after")).status_code == 200  # and it keeps serving
    m, _ = metrics(srv)
    assert total(m, "dspyc_overload_rejections_total") == codes.count(429)


# ---- auth --------------------------------------------------------------------------------------


def test_tokens_tenants_admin_and_no_secrets_anywhere(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# tenants\ntok-alpha-secret namespace=alpha\n"
                      "tok-beta-secret namespace=beta\n\nadm-secret admin\n")
    log = tmp_path / "access.jsonl"
    _, sim = start_sim("--api-key", "sk-upstream-secret")
    env_key = "SERVE_TEST_KEY"
    os.environ[env_key] = "sk-upstream-secret"
    try:
        proc, srv = start_serve("--upstream", sim, "--api-key-env", env_key,
                                "--auth-token-file", tokens, "--access-log", log)
    finally:
        del os.environ[env_key]
    a = {"Authorization": "Bearer tok-alpha-secret"}
    b = {"Authorization": "Bearer tok-beta-secret"}
    adm = {"Authorization": "Bearer adm-secret"}
    assert_openai_error(post(srv, chat()), 401, "invalid_api_key")
    assert_openai_error(post(srv, chat(), {"Authorization": "Bearer nope"}), 401)
    assert post(srv, chat(), a).headers["x-dspyc-cache"] == "miss"
    assert post(srv, chat(), a).headers["x-dspyc-cache"] == "hit"
    assert post(srv, chat(), b).headers["x-dspyc-cache"] == "miss"  # tenants never share
    # a tenant cannot reach another's namespace by naming it
    assert post(srv, chat(cache={"namespace": "beta"}), a).headers["x-dspyc-cache"] == "miss"
    assert client(srv, "tok-alpha-secret").chat.completions.create(
        model="m", messages=MSG).choices[0].message.content
    assert httpx.get(root(srv) + "/metrics", headers=a).status_code == 403
    assert httpx.get(root(srv) + "/metrics").status_code == 401
    m, text = metrics(srv, "adm-secret")
    assert total(m, "dspyc_unauthorized_total") == 4
    assert httpx.get(root(srv) + "/health").status_code == 200
    assert httpx.get(root(srv) + "/dashboard/data", headers=adm).status_code == 200
    assert httpx.get(root(srv) + "/dashboard?token=adm-secret").status_code == 200
    # upstream rejects a wrong key: its error reaches the client, the key does not
    time.sleep(0.2)
    secrets = ["tok-alpha-secret", "tok-beta-secret", "adm-secret", "sk-upstream-secret"]
    seen = text + log.read_text() + "".join(proc.stderr_lines)
    for s in secrets:
        assert s not in seen
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert {l["tenant"] for l in lines if l["route"] == "chat" and l["status"] == 200} == {
        "alpha", "beta"}


def test_token_file_errors(tmp_path):
    bad = tmp_path / "t"
    bad.write_text("s3cr3t-value namespace=x bogus\n")
    _, sim = start_sim()
    p = subprocess.run([DSPYC, "serve", "--upstream", sim, "--auth-token-file", bad],
                       capture_output=True, text=True)
    assert p.returncode == 1 and ":1:" in p.stderr and "s3cr3t" not in p.stderr
    empty = tmp_path / "e"
    empty.write_text("# nothing\n")
    p = subprocess.run([DSPYC, "serve", "--upstream", sim, "--auth-token-file", empty],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no token" in p.stderr


# ---- observability -------------------------------------------------------------------------------


def test_metrics_parse_and_move():
    sim, srv = proxy()
    m0, _ = metrics(srv)
    post(srv, chat())
    post(srv, chat())
    list(client(srv).chat.completions.create(model="m", messages=MSG, stream=True))
    post(srv, {"model": "e", "input": "x"}, path="/embeddings")
    m, text = metrics(srv)
    assert total(m, "dspyc_requests_total", route="chat", status="200", model="m") == 3
    assert total(m, "dspyc_requests_total", route="embeddings") == 1
    assert total(m, "dspyc_tokens_total", direction="out") > 0
    assert total(m, "dspyc_cache_lookups_total", result="hit", level="l1") == 2
    assert total(m, "dspyc_cache_lookups_total", result="miss") == 2
    assert total(m, "dspyc_request_duration_seconds_count", route="chat") == 3
    assert total(m, "dspyc_upstream_duration_seconds_count", upstream="default") == 2
    assert total(m, "dspyc_upstream_ttft_seconds_count", upstream="default") == 0
    assert total(m, "dspyc_process_resident_memory_bytes") > 1e6
    assert total(m, "dspyc_in_flight") == 0
    assert total(m, "dspyc_profile_seconds_total", route="chat", stage="upstream_wait") > 0
    assert total(m, "dspyc_upstream_requests_total") == 2


def test_profile_route_lists_stages_and_hot_spots():
    sim, srv = proxy(sim_args=("--latency-ms", 20))
    for i in range(5):
        post(srv, chat(f"p{i}"))
    p = httpx.get(root(srv) + "/debug/profile").json()
    chat_r = next(r for r in p["routes"] if r["route"] == "chat")
    assert chat_r["requests"] == 5
    assert [s["stage"] for s in chat_r["stages"]] == ["parse", "cache_lookup", "format",
                                                      "upstream_wait", "parse_reply", "write"]
    assert abs(sum(s["share"] for s in chat_r["stages"]) - 1) < 1e-6
    assert p["hot_spots"][0]["stage"] == "upstream_wait"


def test_dashboard_renders_in_chromium(tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    tokens = tmp_path / "tokens"
    tokens.write_text("adm admin\nuser\n")
    sim, srv = proxy("--auth-token-file", tokens)
    for i in range(20):
        post(srv, chat(f"d{i % 5}"), {"Authorization": "Bearer user"})
    page = httpx.get(root(srv) + "/dashboard?token=adm").text
    assert "<script src" not in page and "http://" not in page.split("<script>")[1]
    url = root(srv) + "/dashboard?token=adm"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--virtual-time-budget=3000", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([chromium, *flags, f"--user-data-dir={tmp_path}/u1", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    assert 'data-charts-rendered="5"' in dom.stdout, dom.stderr[-2000:]
    assert 'data-seconds-with-traffic="0"' not in dom.stdout
    assert 'data-hot-spots="0"' not in dom.stdout
    console = [l for l in dom.stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    assert not console, console
    shot = tmp_path / "dash.png"
    subprocess.run([chromium, *flags, f"--user-data-dir={tmp_path}/u2", f"--screenshot={shot}",
                    "--window-size=1300,900", url], capture_output=True, timeout=60)
    assert os.path.getsize(shot) > 20000
    keep = os.environ.get("DSPYC_TEST_ARTIFACTS")
    if keep:
        shutil.copy(shot, os.path.join(keep, "serve_dashboard.png"))


def test_access_log_lines(tmp_path):
    log = tmp_path / "a.jsonl"
    sim, srv = proxy("--access-log", log)
    post(srv, chat())
    post(srv, chat())
    httpx.get(root(srv) + "/v1/nope")
    time.sleep(0.1)
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    chat_lines = [l for l in lines if l["route"] == "chat"]
    assert [l["cache"] for l in chat_lines] == ["miss", "hit"]
    assert chat_lines[0]["upstream"] == "default" and chat_lines[0]["tokens_out"] > 0
    assert all(l["ms"] >= 0 and l["model"] == "m" for l in chat_lines)


# ---- bad requests and hardening -----------------------------------------------------------------


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving():
    sim, srv = proxy("--max-body", "2k")
    r = httpx.post(srv + "/chat/completions", content=b'{"model": "m", "messages": [}')
    err = assert_openai_error(r, 400, "invalid_json")
    assert "column" in err["message"]
    assert_openai_error(httpx.post(srv + "/chat/completions", content=b"[]"), 400, "model")
    assert_openai_error(post(srv, {"model": "m"}), 400, "messages")
    assert_openai_error(post(srv, {"model": "m", "messages": "x"}), 400, "messages")
    assert_openai_error(httpx.post(srv + "/chat/completions", content=b"x" * 5000), 413)
    assert_openai_error(httpx.get(srv + "/chat/completions"), 405)
    assert_openai_error(httpx.get(srv + "/nowhere"), 404)
    assert post(srv, chat()).status_code == 200


def test_slow_clients_are_cut_off_and_idle_connections_do_not_block():
    sim, srv = proxy("--client-timeout", 1)
    host, port = root(srv)[len("http://"):].split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    idle = [socket.create_connection((host, int(port))) for _ in range(1000)]
    assert post(srv, chat()).status_code == 200  # serving with 1000 idle connections open
    slow.settimeout(5)
    t0 = time.monotonic()
    got = slow.recv(1000)
    assert got == b"" or b"HTTP/1.1" in got  # closed by the server
    assert time.monotonic() - t0 < 4
    for s in idle:
        s.close()
    slow.close()
    assert post(srv, chat("again")).status_code == 200


def test_help_documents_every_flag_and_docs_cover_them():
    out = subprocess.run([DSPYC, "serve", "--help"], capture_output=True, text=True).stdout
    flags = ["--port", "--host", "--threads", "--upstream", "--api-key-env", "--api-key-file",
             "--upstream-timeout", "--max-retries", "--upstream-concurrency", "--config", "--auth-token-file",
             "--max-in-flight", "--max-body", "--client-timeout", "--access-log", "--cache",
             "--program", "--program-workers"]
    docs = open(os.path.join(os.path.dirname(DSPYC), "..", "docs", "serve.md")).read() \
        if os.path.exists(os.path.join(os.path.dirname(DSPYC), "..", "docs", "serve.md")) else \
        open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "serve.md")).read()
    for f in flags:
        assert f in out, f
        assert f in docs, f


# ---- programs ----------------------------------------------------------------------------------


ARITH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "arith")


def test_programs_one_record_batch_and_listing(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"solve.predict": {
        "traces": [], "train": [], "demos": [],
        "signature": {"instructions": "Answer with the number only.",
                      "fields": [{"prefix": "Question:", "description": "${question}"},
                                 {"prefix": "Reasoning: Let's think step by step in order to",
                                  "description": "${reasoning}"},
                                 {"prefix": "Answer:", "description": "${answer}"}]},
        "lm": None}, "metadata": {"dependency_versions": {}}}))
    prog = os.path.join(ARITH, "program.json")
    sim, srv = proxy("--program", f"arith={prog}", "--program", f"tuned={prog}:{state}")
    listing = httpx.get(srv + "/programs").json()["data"]
    assert [p["name"] for p in listing] == ["arith", "tuned"]
    assert listing[0]["inputs"] == ["question"]
    assert listing[0]["predictors"][0]["outputs"] == ["reasoning", "answer"]
    rows = [json.loads(l) for l in open(os.path.join(ARITH, "dev.jsonl"))][:6]
    r = httpx.post(srv + "/programs/arith", json={"inputs": {"question": rows[0]["question"]}},
                   timeout=30)
    assert r.status_code == 200 and set(r.json()["outputs"]) == {"reasoning", "answer"}
    # the same record through `dspyc run` gives the same prediction
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"question": rows[0]["question"]}) + "\n")
    out = tmp_path / "out.jsonl"
    subprocess.run([DSPYC, "run", prog, "--input", inp, "--output", out, "--base-url", sim,
                    "--model", "default", "--cache", "off"], check=True, capture_output=True)
    assert json.loads(out.read_text())["prediction"] == r.json()["outputs"]
    # the state file changes the prompt the simulator sees
    n = sim_requests(sim)
    httpx.post(srv + "/programs/tuned", json={"inputs": {"question": rows[0]["question"]}},
               timeout=30)
    last = json.loads(open(_records[sim]).read().splitlines()[-1])["body"]
    assert sim_requests(sim) == n + 1
    assert "Answer with the number only." in last["messages"][0]["content"]
    # a batch: JSON lines in, JSON lines out in order, a bad line answered in its place
    lines = [json.dumps({"question": x["question"]}) for x in rows] + ["{oops", "",
                                                                       json.dumps({"inputs": {}})]
    with httpx.stream("POST", srv + "/programs/arith/batch", content="\n".join(lines),
                      timeout=60) as resp:
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        got = [json.loads(l) for l in resp.iter_lines() if l]
    assert [g["index"] for g in got] == list(range(8))
    assert all("outputs" in g for g in got[:6])
    assert got[6]["error"]["code"] == "parse" and got[7]["error"]["field"] == "question"
    # errors
    assert_openai_error(httpx.post(srv + "/programs/nope", json={}), 404, "program_not_found")
    assert_openai_error(httpx.post(srv + "/programs/arith", content=b"{"), 400, "invalid_json")
    assert_openai_error(httpx.post(srv + "/programs/arith", json={"x": 1}), 400, "inputs")
    r = httpx.post(srv + "/programs/arith", json={"inputs": {}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "question"
    p = subprocess.run([DSPYC, "serve", "--upstream", sim, "--program", "bad"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "NAME=PROGRAM.json" in p.stderr
    p = subprocess.run([DSPYC, "serve", "--upstream", sim, "--program", f"x={tmp_path}/no.json"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no.json" in p.stderr


def test_the_proxy_shares_cache_entries_with_dspyc_predict(tmp_path):
    """The proxy keys a request as the lm layer does: an answer `dspyc predict` stored on disk
    is a hit for the same request through the proxy, and the other way round."""
    cache = tmp_path / "cache"
    sim = recorded_sim()
    args = ["--base-url", sim, "--model", "openai/m", "--cache", "disk", "--cache-dir", cache]
    p = subprocess.run([DSPYC, "predict", *args, "question -> answer", "question=hi"],
                       capture_output=True, text=True, check=True)
    msgs = json.loads(subprocess.run([DSPYC, "predict", "--print-messages", "question -> answer",
                                      "question=hi"], capture_output=True, text=True).stdout)
    n = sim_requests(sim)
    _, srv = start_serve("--upstream", sim, "--cache", "disk", "--cache-dir", cache)
    r = post(srv, {"model": "m", "messages": msgs})
    assert r.headers["x-dspyc-cache"] == "hit", r.text
    assert sim_requests(sim) == n
    assert json.loads(p.stdout)["answer"] in r.json()["choices"][0]["message"]["content"]
    # a request the proxy stored answers `dspyc predict`
    msgs2 = json.loads(subprocess.run([DSPYC, "predict", "--print-messages",
                                       "question -> answer", "question=there"],
                                      capture_output=True, text=True).stdout)
    assert post(srv, {"model": "m", "messages": msgs2}).headers["x-dspyc-cache"] == "miss"
    n = sim_requests(sim)
    subprocess.run([DSPYC, "predict", *args, "question -> answer", "question=there"],
                   capture_output=True, text=True, check=True)
    assert sim_requests(sim) == n


def test_two_proxies_share_answers_through_redis():
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    from test_cache import Redis
    redis = Redis(binary)
    try:
        sim = recorded_sim()
        flags = ("--upstream", sim, "--cache", "mem,redis", "--redis-url", redis.url)
        _, a = start_serve(*flags)
        _, b = start_serve(*flags)
        assert post(a, chat("shared by two")).headers["x-dspyc-cache"] == "miss"
        n = sim_requests(sim)
        assert post(b, chat("shared by two")).headers["x-dspyc-cache"] == "hit"
        assert sim_requests(sim) == n
        m, _ = metrics(b)
        assert total(m, "dspyc_cache_lookups_total", result="hit", level="l2") == 1
        assert redis.dbsize() >= 1
    finally:
        redis.kill()


def test_more_flags_have_their_effect(tmp_path):
    # --api-key-file: the upstream insists on its key
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    sim = recorded_sim("--api-key", "sk-from-file")
    _, srv = start_serve("--upstream", sim, "--api-key-file", key, "--api-key-env", "NO_SUCH_VAR")
    assert post(srv, chat()).status_code == 200
    _, nokey = start_serve("--upstream", sim, "--api-key-env", "NO_SUCH_VAR", "--max-retries", 0)
    assert post(nokey, chat()).status_code == 401  # the upstream's own 401, passed through
    # --upstream-timeout: a slow upstream is cut off with 504
    slow = recorded_sim("--latency-ms", 3000)
    _, srv = start_serve("--upstream", slow, "--upstream-timeout", 0.3, "--max-retries", 0)
    assert_openai_error(post(srv, chat()), 504, "upstream_timeout")
    # --threads: polling threads of the HTTP side
    p1, _ = start_serve("--upstream", sim, "--threads", 1)
    p4, _ = start_serve("--upstream", sim, "--threads", 4)
    tasks = lambda p: len(os.listdir(f"/proc/{p.pid}/task"))
    assert tasks(p4) - tasks(p1) >= 3
    # --no-store (server-wide): nothing is kept; --cache-namespace: entries kept apart
    sim = recorded_sim()
    _, srv = start_serve("--upstream", sim, "--no-store")
    post(srv, chat())
    assert post(srv, chat()).headers["x-dspyc-cache"] == "miss"
    d = tmp_path / "c"
    _, a = start_serve("--upstream", sim, "--cache", "disk", "--cache-dir", d)
    _, b = start_serve("--upstream", sim, "--cache", "disk", "--cache-dir", d,
                       "--cache-namespace", "other")
    assert post(a, chat("ns")).headers["x-dspyc-cache"] == "miss"
    assert post(b, chat("ns")).headers["x-dspyc-cache"] == "miss"
    assert post(b, chat("ns")).headers["x-dspyc-cache"] == "hit"
    # the route without /v1 answers too (clients configured with a bare base URL)
    r = httpx.post(root(srv) + "/chat/completions", json=chat("bare"), timeout=30)
    assert r.status_code == 200 and r.json()["choices"]


def test_program_workers_bound_concurrent_program_calls():
    prog = os.path.join(ARITH, "program.json")
    sim, srv = proxy("--program", f"arith={prog}", "--program-workers", 1, "--cache", "off",
                     sim_args=("--latency-ms", 300))
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        rs = list(pool.map(lambda i: httpx.post(srv + "/programs/arith", json={
            "inputs": {"question": f"What is {i} + 1?"}}, timeout=30), range(3)))
    assert all(r.status_code == 200 for r in rs)
    assert time.monotonic() - t0 >= 0.85  # one worker: one call at a time
