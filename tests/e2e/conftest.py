"""Shared helpers of the end-to-end tests: the path of the built `dspyc` binary and
`start_sim(*args) -> (proc, base_url)`, which starts `dspyc sim --port 0 ARGS...`, waits for
its listening line and stops it when the test ends (or at exit)."""
import atexit
import os
import re
import subprocess
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DSPYC = os.path.abspath(os.path.join(ROOT, os.environ.get("DSPYC_BIN", "build/dspyc")))

# LiteLLM (under DSPy) otherwise fetches its model price list from the network at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# `dspyc run` and `predict` cache in memory and on disk by default (~/.cache/dspyc): tests
# that count the requests a simulator sees must not find answers left by an earlier run.
# Tests of the cache (test_cache.py) pass their own --cache flags and directories.
os.environ.setdefault("DSPYC_CACHE", "off")

_LISTENING = re.compile(r"listening on (http://\S+/v1)")
_running = []


class SimProcess(subprocess.Popen):
    """A running `dspyc sim`; `.stderr_lines` collects what it printed."""

    stderr_lines: list
    base_url: str
    reader: threading.Thread


def _drain(proc, ready):
    for line in proc.stderr:
        proc.stderr_lines.append(line)
        m = _LISTENING.search(line)
        if m and not ready.is_set():
            proc.base_url = m.group(1)
            ready.set()
    ready.set()  # exited before listening


def start_sim(*args, timeout=20.0, preexec_fn=None, env=None):
    """Start `dspyc sim --port 0 *args`; return (proc, base_url) with base_url like
    "http://127.0.0.1:PORT/v1". The process is stopped when the current test ends.
    preexec_fn and env go to Popen (e.g. to lower the open-files limit, or set a key)."""
    if not os.path.exists(DSPYC):
        pytest.skip(f"{DSPYC} is not built (set DSPYC_BIN)")
    proc = SimProcess([DSPYC, "sim", "--port", "0", *map(str, args)], stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                      preexec_fn=preexec_fn, env=env)
    proc.stderr_lines = []
    proc.base_url = None
    _running.append(proc)
    ready = threading.Event()
    # The reader keeps draining stderr so the process never blocks on a full pipe.
    proc.reader = threading.Thread(target=_drain, args=(proc, ready), daemon=True)
    proc.reader.start()
    if not ready.wait(timeout) or not proc.base_url:
        stop_sim(proc)
        raise RuntimeError(f"dspyc sim did not start: {''.join(proc.stderr_lines)}")
    return proc, proc.base_url


def stop_sim(proc, timeout=10.0):
    """Stop a simulator with SIGTERM (SIGKILL if it lingers); return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.reader.join(timeout)
    if proc in _running:
        _running.remove(proc)
    return proc.returncode


def _stop_all():
    """Stop every simulator; return the sanitizer reports they printed, if any."""
    reports = []
    for proc in list(_running):
        stop_sim(proc)
        text = "".join(proc.stderr_lines)
        if "Sanitizer" in text or "runtime error:" in text:
            reports.append(text)
    return reports


atexit.register(_stop_all)


@pytest.fixture(autouse=True)
def _stop_sims_after_each_test():
    yield
    reports = _stop_all()
    if reports:  # a sanitizer build found a leak or an error in the simulator
        pytest.fail("dspyc sim reported:\n" + "\n".join(reports), pytrace=False)


@pytest.fixture
def sim():
    """The start_sim function as a fixture: `proc, base = sim("--seed", 3)`."""
    return start_sim
