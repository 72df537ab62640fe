"""Self-tests of the gates `make test` relies on: the pytest plugin strict_skips and
scripts/ctest-strict.sh must fail a run in which anything was skipped, whether the skip is
raised while a test runs, while a module is collected, or by cmocka's skip() inside a unit
test. Each gate is run in a subprocess on a tiny deliberately skipping test."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.e2e]

TESTS_DIR = os.path.join(ROOT, "tests")
BUILD = os.path.abspath(os.environ.get("DSPYC_BUILD", os.path.join(ROOT, "build")))


def run_pytest(tmp_path, source, *args, strict=True):
    (tmp_path / "test_tiny.py").write_text(source)
    # A passing test beside it, as in the real suite (else pytest exits 5, "no tests ran").
    (tmp_path / "test_other.py").write_text(PASSING)
    env = dict(os.environ, PYTHONPATH=TESTS_DIR)
    env.pop("PYTEST_ADDOPTS", None)
    env["DSPYC_STRICT_SKIPS"] = "1" if strict else "0"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "strict_skips",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args,
                           str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


MODULE_SKIP = ('import pytest\nmissing = pytest.importorskip("dspyc_no_such_module")\n'
               'def test_a():\n    assert missing\n')
RUNTIME_SKIP = 'import pytest\ndef test_a():\n    pytest.skip("not here")\n'
PASSING = 'def test_a():\n    assert 1 + 1 == 2\n'
TWO = 'import pytest\n@pytest.mark.slow\ndef test_a():\n    pass\ndef test_b():\n    pass\n'


def test_pytest_gate_fails_on_module_level_importorskip(tmp_path):
    r = run_pytest(tmp_path, MODULE_SKIP)
    assert r.returncode == 1, r.stdout
    assert "skipped at collection" in r.stdout and "test_tiny.py" in r.stdout
    # The same run without the gate passes: the gate, not pytest, fails it.
    assert run_pytest(tmp_path, MODULE_SKIP, strict=False).returncode == 0


def test_pytest_gate_fails_on_skip_while_running(tmp_path):
    r = run_pytest(tmp_path, RUNTIME_SKIP)
    assert r.returncode != 0, r.stdout
    assert "skipped: " in r.stdout and "test_tiny.py::test_a" in r.stdout


def test_pytest_gate_fails_on_deselected_tests(tmp_path):
    r = run_pytest(tmp_path, TWO, "-m", "not slow")
    assert r.returncode != 0, r.stdout
    assert "deselected: " in r.stdout and "test_a" in r.stdout


def test_pytest_gate_passes_a_clean_run(tmp_path):
    r = run_pytest(tmp_path, PASSING)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left out" not in r.stdout


CMOCKA_SRC = r"""
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
static void t_ok(void **s) { (void)s; assert_int_equal(2, 1 + 1); }
static void t_skip(void **s) { (void)s; if (SKIP) skip(); }
int main(void)
{
    const struct CMUnitTest t[] = { cmocka_unit_test(t_ok), cmocka_unit_test(t_skip) };
    return cmocka_run_group_tests(t, NULL, NULL);
}
"""


def unit_test_properties():
    """{test name: {property: value}} of every unit-labelled test in the real build."""
    r = subprocess.run(["ctest", "--show-only=json-v1", "-L", "unit"], cwd=BUILD,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    tests = json.loads(r.stdout)["tests"]
    return {t["name"]: {p["name"]: p["value"] for p in t.get("properties", [])}
            for t in tests}


def build_cmocka_ctest(tmp_path, skip, skip_regex):
    exe = tmp_path / "tiny"
    (tmp_path / "tiny.c").write_text(CMOCKA_SRC)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "cmocka"], capture_output=True,
                           text=True, check=True).stdout.split()
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    subprocess.run([cc, f"-DSKIP={int(skip)}", str(tmp_path / "tiny.c"), *flags, "-o",
                    str(exe)], check=True, timeout=120)
    regex = skip_regex.replace("\\", "\\\\")
    (tmp_path / "CTestTestfile.cmake").write_text(
        f'add_test(unit_tiny "{exe}")\n'
        f'set_tests_properties(unit_tiny PROPERTIES LABELS "unit" SKIP_RETURN_CODE 77 '
        f'SKIP_REGULAR_EXPRESSION "{regex}")\n')


def run_ctest_gate(tmp_path):
    return subprocess.run([os.path.join(ROOT, "scripts", "ctest-strict.sh"), str(tmp_path),
                           "--output-on-failure", "-L", "unit"],
                          capture_output=True, text=True, timeout=120)


def test_every_unit_test_counts_cmocka_skips():
    props = unit_test_properties()
    assert props, "no unit tests in the build"
    for name, p in props.items():
        assert p.get("SKIP_REGULAR_EXPRESSION"), f"{name} has no SKIP_REGULAR_EXPRESSION"


@pytest.mark.parametrize("skip", [True, False])
def test_ctest_gate_fails_on_cmocka_skip(tmp_path, skip):
    # The tiny test carries the same property as the real unit tests.
    regex = next(iter(unit_test_properties().values()))["SKIP_REGULAR_EXPRESSION"][0]
    build_cmocka_ctest(tmp_path, skip, regex)
    r = run_ctest_gate(tmp_path)
    if skip:
        assert r.returncode != 0, r.stdout
        assert "ctest-strict: some tests were skipped" in r.stdout
    else:
        assert r.returncode == 0, r.stdout + r.stderr
