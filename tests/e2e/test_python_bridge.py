"""End-to-end tests of the embedded-CPython bridge (src/python) with real DSPy: a DSPy
program module written to a temporary directory is loaded from C by the compat_pycall
helper (tests/compat/pycall.c), called from several C threads against `dspyc sim`, and
its timings and answers checked; a venv without DSPy, a venv of another Python and a
rejected API key are reported clearly.

compat_pycall is looked up in $DSPYC_BUILD (relative to the repository) when set, else
next to the dspyc binary conftest uses. The venv the bridge embeds is the one running
pytest, else ./.venv."""
import json
import os
import subprocess
import sys

import pytest

from conftest import DSPYC, ROOT, start_sim

dspy = pytest.importorskip("dspy")

if os.environ.get("DSPYC_BUILD"):
    PYCALL = os.path.join(ROOT, os.environ["DSPYC_BUILD"], "compat_pycall")
else:
    PYCALL = os.path.join(os.path.dirname(DSPYC), "compat_pycall")

if sys.prefix != sys.base_prefix:
    VENV = sys.prefix
else:
    VENV = os.path.join(ROOT, ".venv")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(PYCALL), reason=f"{PYCALL} is not built"),
    pytest.mark.skipif(not os.path.exists(os.path.join(VENV, "pyvenv.cfg")),
                       reason=f"no virtualenv with DSPy at {VENV}"),
]

PROGRAM = """\
import os
import dspy

lm = dspy.LM("openai/dspyc-sim", api_base=os.environ["DSPYC_PYBRIDGE_BASE_URL"],
             api_key=os.environ.get("DSPYC_PYBRIDGE_API_KEY", "sim"), cache=False)
dspy.configure(lm=lm)
qa = dspy.Predict("question -> answer")
"""

QUESTION = "What is the capital of France?"


def write_program(tmp_path, name="bridge_program"):
    (tmp_path / f"{name}.py").write_text(PROGRAM)
    return f"{name}:qa"


def pycall(target, *args, path=None, venv=VENV, env=(), timeout=300):
    """Run compat_pycall; return (returncode, the JSON line it printed last, stderr)."""
    cmd = [PYCALL, "--venv", venv, "--env", "LITELLM_LOCAL_MODEL_COST_MAP=True"]
    if path:
        cmd += ["--path", str(path)]
    for e in env:
        cmd += ["--env", e]
    e = dict(os.environ)
    # Leak checking of a whole DSPy import (when built with ASan) is noise, not signal.
    e["ASAN_OPTIONS"] = e.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    e.pop("VIRTUAL_ENV", None)
    r = subprocess.run(cmd + [*args, target], capture_output=True, text=True, env=e,
                       timeout=timeout)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, (r.stdout, r.stderr)
    return r.returncode, json.loads(lines[-1]), r.stderr


def test_dspy_predict_runs_through_the_bridge(tmp_path):
    _, base = start_sim("--latency-ms", "20")
    target = write_program(tmp_path)
    rc, out, err = pycall(target, "--kwargs", json.dumps({"question": QUESTION}),
                          "--calls", "12", "--threads", "4", "--warmup", "1",
                          path=tmp_path, env=[f"DSPYC_PYBRIDGE_BASE_URL={base}"])
    assert rc == 0, (out, err)
    assert out["ok"] == 12 and out["errors"] == 0 and out["first_error"] is None
    assert out["python"]["dspy"] == dspy.__version__
    assert out["python"]["prefix"] == os.path.realpath(VENV)
    answer = out["result"]["answer"]
    assert isinstance(answer, str) and answer
    # Every phase was measured; the LM's 20 ms sits inside Python's execution time.
    for phase in ("gil_wait_us", "exec_us", "convert_us", "total_us"):
        assert set(out[phase]) == {"mean", "p50", "p99", "max"}
    assert out["exec_us"]["p50"] >= 20000
    assert 0 < out["convert_us"]["mean"] < out["exec_us"]["mean"]
    assert out["total_us"]["mean"] >= out["exec_us"]["mean"]

    # The simulator answers as a pure function of the request: DSPy run directly in this
    # process sends the same request and gets the same answer.
    lm = dspy.LM("openai/dspyc-sim", api_base=base, api_key="sim", cache=False)
    with dspy.context(lm=lm):
        direct = dspy.Predict("question -> answer")(question=QUESTION)
    assert direct.answer == answer


def test_lm_errors_keep_their_class(tmp_path):
    _, base = start_sim("--api-key", "the-right-key")
    target = write_program(tmp_path)
    rc, out, _ = pycall(target, "--kwargs", json.dumps({"question": QUESTION}),
                        "--calls", "2", "--warmup", "0", path=tmp_path,
                        env=[f"DSPYC_PYBRIDGE_BASE_URL={base}",
                             "DSPYC_PYBRIDGE_API_KEY=a-wrong-key"])
    assert rc == 1
    assert out["errors"] == 2 and out["ok"] == 0
    assert out["first_error"]["code"] == "auth", out["first_error"]
    assert out["first_error"]["http_status"] == 401
    assert "AuthenticationError" in out["first_error"]["message"]


def test_venv_without_dspy_is_reported(tmp_path):
    bare = tmp_path / "bare-venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(bare)], check=True)
    target = write_program(tmp_path)
    rc, out, err = pycall(target, path=tmp_path, venv=str(bare),
                          env=["DSPYC_PYBRIDGE_BASE_URL=http://127.0.0.1:9/v1"])
    assert rc == 1
    assert out["error"]["code"] == "not_found"
    msg = out["error"]["message"]
    assert "No module named 'dspy'" in msg and "DSPy is not installed" in msg
    assert str(bare.resolve()) in msg
    assert out["python"]["prefix"] == str(bare.resolve())
    assert out["python"]["dspy"] is None
    assert "No module named 'dspy'" in err


def test_venv_of_another_python_is_refused(tmp_path):
    other = tmp_path / "py27"
    other.mkdir()
    (other / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 2.7.18\n")
    rc, out, _ = pycall("os:getcwd", venv=str(other))
    assert rc == 1
    assert out["error"]["code"] == "unsupported"
    assert "made by Python 2.7" in out["error"]["message"]


def test_missing_venv_and_module_are_reported(tmp_path):
    rc, out, _ = pycall("os:getcwd", venv=str(tmp_path / "nowhere"))
    assert rc == 1 and out["error"]["code"] == "not_found"
    assert "not a virtualenv" in out["error"]["message"]

    rc, out, _ = pycall("no_such_module_xyz:qa", "--warmup", "0", "--calls", "0")
    assert rc == 1 and out["error"]["code"] == "not_found"
    assert "No module named 'no_such_module_xyz'" in out["error"]["message"]
