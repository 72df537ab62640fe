"""End-to-end tests of secrets and headers: a password in the LM URL appears nowhere in what
run, predict and bench print or write (it used to be copied into records, errors and the
bench report); an API key or model name with CR/LF is refused before any request is sent
(it used to inject an HTTP header)."""
import json
import os
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

PW = "hunter2SECRETpw"
SIG = "question -> answer"


def dspyc(*args, env_extra=None, timeout=120):
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL", "OPENAI_API_KEY"):
        e.pop(k, None)
    e["DSPYC_CACHE"] = "off"
    e.update(env_extra or {})
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=e,
                          timeout=timeout)


def closed_port_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://alice:{PW}@127.0.0.1:{port}/v1"


def assert_no_secret(tmp_path, *results):
    for r in results:
        assert PW not in r.stdout and PW not in r.stderr
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert PW.encode() not in f.read_bytes(), f


@pytest.fixture(params=["unreachable", "401"])
def secret_url(request):
    if request.param == "unreachable":
        return closed_port_url()
    _, base = start_sim("--api-key", "sk-right")
    return base.replace("http://", f"http://alice:{PW}@")


def test_url_password_never_shown(tmp_path, secret_url):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"question": "What is 2 + 2?"}\n')
    common = ("--base-url", secret_url, "--model", "m", "--max-retries", 0)
    run = dspyc("run", "--signature", SIG, "--input", inp, "--output", out, *common)
    assert run.returncode == 1, run.stderr
    rec = json.loads(out.read_text())
    assert rec["ok"] is False and rec["error"]["class"] in ("network", "auth")
    pred = dspyc("predict", *common, SIG, "question=hi")
    assert pred.returncode != 0
    bench = dspyc("bench", *common, "--modules", "predict", "--iterations", 2, "--warmup", 0,
                  "--json", tmp_path / "bench.json")
    assert bench.returncode == 1, bench.stderr  # every call failed
    assert "alice:***@127.0.0.1" in bench.stdout  # the endpoint line, masked
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["config"]["endpoint"].startswith("http://alice:***@127.0.0.1:")
    if rec["error"]["class"] == "network":  # says where it failed, without the password
        assert "alice:***@127.0.0.1" in rec["error"]["message"]
    assert_no_secret(tmp_path, run, pred, bench)


@pytest.mark.parametrize("bad", ["sk-good\r\nX-Injected: 1", "sk-good\nX-Injected: 1"])
def test_api_key_with_newline_is_refused(tmp_path, bad):
    _, base = start_sim("--record", tmp_path / "requests.jsonl")
    r = dspyc("predict", "--base-url", base, "--model", "m", SIG, "question=hi",
              env_extra={"OPENAI_API_KEY": bad})
    assert r.returncode == 2
    assert "API key (from OPENAI_API_KEY) has a control character" in r.stderr
    assert "sk-good" not in r.stderr and "Injected" not in r.stderr
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"question": "q"}\n')
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out, "--base-url", base,
              "--model", "m", env_extra={"OPENAI_API_KEY": bad})
    assert r.returncode == 2 and "control character" in r.stderr
    rec = tmp_path / "requests.jsonl"
    assert not rec.exists() or rec.read_text() == ""  # nothing was sent


def test_model_name_with_newline_is_refused(tmp_path):
    _, base = start_sim("--record", tmp_path / "requests.jsonl")
    r = dspyc("predict", "--base-url", base, "--model", "m\r\nX-Injected: 1", SIG, "question=hi")
    assert r.returncode == 2
    assert "model name has a control character (byte 0x0d at offset 1)" in r.stderr
    rec = tmp_path / "requests.jsonl"
    assert not rec.exists() or rec.read_text() == ""


def test_loadtest_header_with_newline_is_refused():
    r = dspyc("loadtest", "--url", "http://127.0.0.1:1/", "--http", "--header",
              "X-A: 1\r\nX-Injected: 2")
    assert r.returncode != 0
    assert "--header: control character (byte 0x0d)" in r.stderr
