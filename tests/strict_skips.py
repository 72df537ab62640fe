"""A pytest plugin (`-p strict_skips`, with tests/ on PYTHONPATH). With DSPYC_STRICT_SKIPS=1 (as
`make test` sets it) a test left out fails the run: on a set-up machine nothing may be left out
silently. Left out counts every way pytest reports it: a skip while a test runs, a skip while a
module is collected (a module-level `pytest.importorskip`), a deselected test and a collection
error."""
import os

_left_out = []


def _strict():
    return os.environ.get("DSPYC_STRICT_SKIPS") == "1"


def pytest_runtest_logreport(report):
    if report.skipped:
        _left_out.append(("skipped", report.nodeid))


def pytest_collectreport(report):
    # A module that skips at import time never reaches pytest_runtest_logreport.
    if report.skipped:
        _left_out.append(("skipped at collection", report.nodeid))
    elif report.failed:
        _left_out.append(("collection error", report.nodeid))


def pytest_deselected(items):
    for item in items:
        _left_out.append(("deselected", item.nodeid))


def pytest_sessionfinish(session, exitstatus):
    if not _strict() or not _left_out:
        return
    print(f"\n{len(_left_out)} tests were left out, which `make test` does not allow:")
    for why, nodeid in _left_out:
        print(f"  {why}: {nodeid}")
    if session.exitstatus == 0:
        session.exitstatus = 1

