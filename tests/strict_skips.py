"""A pytest plugin (`-p strict_skips`, with tests/ on PYTHONPATH). With DSPYC_STRICT_SKIPS=1 (as `make test` sets it) a skipped
test fails the run: on a set-up machine nothing may be left out silently."""
import os

_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("DSPYC_STRICT_SKIPS") == "1" and _skipped and exitstatus == 0:
        print(f"\n{len(_skipped)} tests were skipped, which `make test` does not allow:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = 1
