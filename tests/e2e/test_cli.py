"""End-to-end tests of `dspyc predict` and `dspyc run` against the simulator: the built-in
one started in-process, and a separate `dspyc sim` reached over loopback HTTP."""
import json
import os
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

GOLDEN_SYSTEM = (
    "Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. `answer` (str):\n"
    "All interactions will be structured in the following way, with the appropriate values "
    "filled in.\n\n[[ ## question ## ]]\n{question}\n\n[[ ## answer ## ]]\n{answer}\n\n"
    "[[ ## completed ## ]]\nIn adhering to this structure, your objective is: \n        "
    "Given the fields `question`, produce the fields `answer`.")
GOLDEN_USER = (
    "[[ ## question ## ]]\nWhat is the capital of France?\n\nRespond with the corresponding "
    "output fields, starting with the field `[[ ## answer ## ]]`, and then ending with the "
    "marker for `[[ ## completed ## ]]`.")


def dspyc(*args, input=None, env=None, timeout=120):
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run([DSPYC, *args], input=input, capture_output=True, text=True,
                          env=e, timeout=timeout)


def test_version_and_help_on_every_subcommand():
    r = dspyc("--version")
    assert r.returncode == 0 and r.stdout.startswith("dspyc ")
    r = dspyc("--help")
    assert r.returncode == 0
    for cmd in ("predict", "run", "sim"):
        assert cmd in r.stdout
        h = dspyc(cmd, "--help")
        assert h.returncode == 0, h.stderr
        assert "usage: dspyc " + cmd in h.stdout
    bad = dspyc("frobnicate")
    assert bad.returncode == 2 and "not a command" in bad.stderr


def test_print_messages_matches_dspy_golden():
    r = dspyc("predict", "--print-messages", "question -> answer",
              "question=What is the capital of France?")
    assert r.returncode == 0, r.stderr
    msgs = json.loads(r.stdout)
    assert msgs == [{"role": "system", "content": GOLDEN_SYSTEM},
                    {"role": "user", "content": GOLDEN_USER}]


def test_predict_against_builtin_simulator():
    r = dspyc("predict", "question -> answer: int, confident: bool",
              "question=What is 7 * 6?")
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    assert set(pred) == {"answer", "confident"}
    assert isinstance(pred["answer"], int) and isinstance(pred["confident"], bool)


def test_predict_cot_with_demos_and_json_values(tmp_path):
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    r = dspyc("predict", "--module", "cot", "--demos", str(demos),
              "question, hints: list[str] -> answer", "question=2+3?", 'hints=["add"]')
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    assert set(pred) == {"reasoning", "answer"}


def test_predict_bad_signature_names_the_offset():
    r = dspyc("predict", "question -> answer: frob", "question=x")
    assert r.returncode == 2
    assert "frob" in r.stderr and "offset" in r.stderr


def test_predict_n_completions():
    r = dspyc("predict", "--n", "3", "question -> answer", "question=Name a colour")
    assert r.returncode == 0, r.stderr
    comps = json.loads(r.stdout)
    assert isinstance(comps, list) and len(comps) == 3
    assert all("answer" in c for c in comps)


def test_run_one_output_line_per_input_line(tmp_path):
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    lines = [
        json.dumps({"question": "What is 2 + 2?"}),
        "{not json",
        json.dumps(["an", "array"]),
        "",
        json.dumps({"wrong_field": 1}),
        json.dumps({"question": "Capital of Peru?"}),
        b"\xff\xfe bad utf8".decode("latin-1"),
    ]
    inp.write_text("\n".join(lines) + "\n", encoding="latin-1")
    r = dspyc("run", "--signature", "question -> answer", "--input", str(inp),
              "--output", str(out))
    assert r.returncode == 1, r.stderr  # some records failed
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [rec["line"] for rec in recs] == [1, 2, 3, 4, 5, 6, 7]  # the empty line too
    ok = {rec["line"]: rec for rec in recs}
    assert ok[1]["ok"] and "answer" in ok[1]["prediction"]
    assert ok[6]["ok"]
    assert ok[2]["error"]["class"] == "parse" and ok[2]["error"]["column"] >= 1
    assert ok[3]["error"]["class"] == "invalid"
    assert ok[4]["error"] == {"class": "invalid", "message": "empty line: every input line "
                              "must be a JSON object of field values"}
    assert ok[5]["error"]["field"] == "question"
    assert not ok[7]["ok"]
    assert "7 records, 2 ok, 5 failed" in r.stderr
    assert "p99" in r.stderr


def test_run_against_external_sim_records_every_request(tmp_path):
    rec = tmp_path / "requests.jsonl"
    proc, base = start_sim("--record", str(rec))
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"question": f"What is {i} + {i}?"}) + "\n"
                           for i in range(25)))
    r = dspyc("run", "--signature", "question -> answer", "--input", str(inp), "--output",
              str(out), "--base-url", base, "--model", "openai/dspyc-sim")
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 25
    bodies = [json.loads(l)["body"] for l in rec.read_text().splitlines()]
    chat = [b for b in bodies if isinstance(b, dict) and "messages" in b]
    assert len(chat) == 25
    assert chat[0]["model"] == "dspyc-sim"  # provider prefix stripped, as litellm does


def test_run_with_every_call_failing_loses_nothing(tmp_path):
    proc, base = start_sim("--fail-500", "1.0")
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(20)))
    r = dspyc("run", "--signature", "question -> answer", "--input", str(inp), "--output",
              str(out), "--base-url", base, "--model", "m")
    assert r.returncode == 1
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(recs) == 20
    assert all(rec["error"]["class"] == "server" and rec["error"]["http_status"] == 500
               for rec in recs)


def test_run_needs_program_or_signature(tmp_path):
    r = dspyc("run", "--input", "x", "--output", "y")
    assert r.returncode == 2 and "--signature" in r.stderr
