"""End-to-end tests of the HTTP client choice: plain http:// goes through dspyc's own HTTP/1.1
client by default and through libcurl with DSPYC_HTTP=curl, with the same records either
way; a proxy in the environment sends http:// through libcurl, which uses it (the own client
does not speak to proxies, so a dead proxy failing the call shows which client ran)."""
import json
import os
import socket
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

SIG = "question -> answer"


def dspyc(*args, env_extra=None, timeout=120):
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL", "OPENAI_API_KEY", "DSPYC_HTTP",
              "http_proxy", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        e.pop(k, None)
    e["DSPYC_CACHE"] = "off"
    e.update(env_extra or {})
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=e,
                          timeout=timeout)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_both_clients_give_the_same_records(tmp_path):
    _, base = start_sim("--seed", 5)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"question": f"What is {i} + {i}?"}) + "\n"
                           for i in range(40)))
    answers = {}
    for client in ("own", "curl"):
        out = tmp_path / f"out-{client}.jsonl"
        r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out, "--base-url", base,
                  "--model", "m", "--concurrency", 8, env_extra={"DSPYC_HTTP": client})
        assert r.returncode == 0, r.stderr
        recs = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(recs) == 40 and all(x["ok"] for x in recs)
        answers[client] = sorted((x["line"], json.dumps(x["prediction"], sort_keys=True))
                                 for x in recs)
    assert answers["own"] == answers["curl"]


def test_a_proxy_in_the_environment_goes_through_libcurl():
    _, base = start_sim()
    direct = dspyc("predict", "--base-url", base, "--model", "m", "--max-retries", 0, SIG,
                   "question=hi")
    assert direct.returncode == 0, direct.stderr
    dead = {"http_proxy": f"http://127.0.0.1:{closed_port()}"}
    via = dspyc("predict", "--base-url", base, "--model", "m", "--max-retries", 0, SIG,
                "question=hi", env_extra=dead)
    assert via.returncode != 0
    assert "connect" in (via.stdout + via.stderr).lower()


def test_host_names_on_both_clients():
    """A name from /etc/hosts answers, and a name that resolves nowhere fails the same way on
    both clients: a network-class error that says the host could not be resolved."""
    _, base = start_sim()
    by_name = base.replace("127.0.0.1", "localhost")
    assert by_name != base
    port = base.split(":")[2].split("/")[0]
    nowhere = f"http://nonexistent.invalid:{port}/v1"
    errors = {}
    for client in ("own", "curl"):
        env = {"DSPYC_HTTP": client}
        ok = dspyc("predict", "--base-url", by_name, "--model", "m", "--max-retries", 0, SIG,
                   "question=hi", env_extra=env)
        assert ok.returncode == 0, ok.stderr
        bad = dspyc("predict", "--base-url", nowhere, "--model", "m", "--max-retries", 0, SIG,
                    "question=hi", env_extra=env)
        assert bad.returncode != 0
        errors[client] = json.loads(bad.stdout)["error"]
    assert errors["own"]["class"] == "network"
    assert "nonexistent.invalid" in errors["own"]["message"]
    assert "Couldn't resolve host name" in errors["own"]["message"]
    assert errors["own"] == errors["curl"]
