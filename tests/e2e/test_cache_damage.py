"""End-to-end tests of a damaged disk cache: `data.mdb` cut to 64 KiB (as after a full disk
or a copy that stopped) used to kill run, predict, cache stats and cache clear with SIGBUS.
Now each goes on without the disk level with one warning naming the file and the repair,
`cache clear` repairs it, and the next run caches on disk again."""
import json
import os
import subprocess

import pytest

from conftest import DSPYC, start_sim

pytestmark = [pytest.mark.e2e]

SIG = "question -> answer"
REPAIR = "`dspyc cache clear --level disk`"


def dspyc(*args, timeout=120):
    e = dict(os.environ)
    for k in ("DSPYC_BASE_URL", "OPENAI_BASE_URL", "DSPYC_MODEL", "DSPYC_CACHE"):
        e.pop(k, None)
    return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True, env=e,
                          timeout=timeout)


@pytest.fixture
def damaged(tmp_path):
    """A cache directory whose data.mdb was filled, then cut to 64 KiB."""
    cdir = tmp_path / "cache"
    inp = tmp_path / "fill.jsonl"
    inp.write_text("".join(json.dumps({"question": "x" * 3000 + str(i)}) + "\n"
                           for i in range(200)))
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", tmp_path / "fill.out",
              "--cache", "disk", "--cache-dir", cdir, "-q")
    assert r.returncode == 0, r.stderr
    data = cdir / "data.mdb"
    assert data.stat().st_size > 64 << 10
    os.truncate(data, 64 << 10)
    return cdir


def one_warning(stderr, cdir):
    lines = [l for l in stderr.splitlines() if "damaged" in l]
    assert len(lines) == 1, stderr
    assert str(cdir / "data.mdb") in lines[0]
    assert REPAIR in lines[0]
    assert "Bus error" not in stderr


@pytest.mark.parametrize("levels", ["mem,disk", "disk"])
def test_run_goes_on_without_the_damaged_level(tmp_path, damaged, levels):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"question": "What is 2 + 2?"}\n{"question": "Capital of Peru?"}\n')
    r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out, "--cache", levels,
              "--cache-dir", damaged)
    assert r.returncode == 0, r.stderr
    one_warning(r.stderr, damaged)
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [rec["ok"] for rec in recs] == [True, True]


def test_predict_goes_on_without_the_damaged_level(damaged):
    r = dspyc("predict", "--cache-dir", damaged, SIG, "question=hi")
    assert r.returncode == 0, r.stderr
    one_warning(r.stderr, damaged)
    assert "answer" in json.loads(r.stdout)


def test_stats_reports_the_damage(damaged):
    r = dspyc("cache", "stats", "--cache-dir", damaged)
    assert r.returncode == 0, r.stderr
    one_warning(r.stderr, damaged)
    assert "damaged" in r.stdout and REPAIR in r.stdout
    r = dspyc("cache", "stats", "--json", "--cache-dir", damaged)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["l3"]["damaged"] is True
    assert str(damaged / "data.mdb") in doc["l3"]["error"]
    assert doc["l3"]["repair"] == "dspyc cache clear --level disk"


def test_export_says_to_repair_first(tmp_path, damaged):
    r = dspyc("cache", "export", tmp_path / "x.jsonl", "--cache-dir", damaged)
    assert r.returncode == 2
    one_warning(r.stderr, damaged)
    assert "repair it first" in r.stderr


def test_clear_repairs_and_the_next_run_caches_again(tmp_path, damaged):
    r = dspyc("cache", "clear", "--level", "disk", "--cache-dir", damaged)
    assert r.returncode == 0, r.stderr
    assert "removed it" in r.stderr and "Bus error" not in r.stderr
    r = dspyc("cache", "stats", "--json", "--cache-dir", damaged)
    assert r.returncode == 0 and "damaged" not in r.stderr
    assert json.loads(r.stdout)["l3"]["entries"] == 0
    # The next runs store on disk and then answer from it, over an external simulator
    # whose request count shows the second run sent nothing upstream.
    proc, base = start_sim("--record", tmp_path / "req.jsonl")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"question": "What is 2 + 2?"}\n')
    for _ in range(2):
        r = dspyc("run", "--signature", SIG, "--input", inp, "--output", out, "--cache",
                  "disk", "--cache-dir", damaged, "--base-url", base, "--model", "m")
        assert r.returncode == 0, r.stderr
        assert "damaged" not in r.stderr
    assert "1 of 1 LM calls answered from the cache" in r.stderr
    assert len((tmp_path / "req.jsonl").read_text().splitlines()) == 1
    r = dspyc("cache", "stats", "--json", "--cache-dir", damaged)
    assert json.loads(r.stdout)["l3"]["entries"] == 1
