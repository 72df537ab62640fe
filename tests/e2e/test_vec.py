"""End-to-end tests of the vec layer: `dspyc vec info --json` and `dspyc vec bench --json`
(structure and values), the CPU fallback without a GPU, flag errors, and the kernels
through the public C API (libdspyc.so over ctypes) against numpy in float64."""
import json
import os
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from conftest import DSPYC, ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import vecffi  # noqa: E402

pytestmark = [pytest.mark.e2e]
BUILD = os.environ.get("DSPYC_BUILD", os.path.join(ROOT, "build"))


def vec(*args, rc=0, timeout=300):
    r = subprocess.run([DSPYC, "vec", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == rc, r.stderr + r.stdout
    return r


@pytest.fixture(scope="module")
def info():
    return json.loads(vec("info", "--json").stdout)


@pytest.fixture(scope="module")
def lib():
    return vecffi.load(BUILD)


def test_info_describes_the_cpu_and_why_cuda_is_absent(info):
    cpu = info["devices"][0]
    assert cpu["id"] == "cpu" and cpu["backend"] == "cpu"
    assert cpu["cores"] == os.cpu_count()
    assert cpu["simd"] in ("avx512", "avx2", "scalar")
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if " avx512f " in flags and " avx512bw " in flags:
        assert cpu["simd"] == "avx512"
    assert cpu["blas"].startswith("OpenBLAS")
    assert cpu["memory_bytes"] > 1 << 28
    if info["cuda_available"]:
        assert info["backends"] == ["cpu", "cuda"]
        gpus = info["devices"][1:]
        assert gpus and all(g["id"].startswith("cuda:") and "compute_capability" in g
                            for g in gpus)
    else:
        assert info["backends"] == ["cpu"] and len(info["devices"]) == 1
        assert info["cuda_reason"]
        text = vec("info").stdout
        assert "not usable: " + info["cuda_reason"] in text


def test_bench_json_structure_and_accuracy(tmp_path, info):
    out = tmp_path / "vec.json"
    r = vec("bench", "--device", "cpu", "--sizes", "3000x64,1201x33", "--repeat", 1,
            "--queries", 4, "--k", 7, "--threads", 1, "--json", out)
    doc = json.loads(out.read_text())
    with open(os.path.join(ROOT, "docs", "vec-bench.schema.json")) as f:
        jsonschema.validate(doc, json.load(f))
    assert set(doc) == {"devices", "bandwidth_gbps", "results"}
    assert doc["devices"] == info
    assert set(doc["bandwidth_gbps"]) == {"cpu"} and doc["bandwidth_gbps"]["cpu"] > 0.1
    res = doc["results"]
    for o in res:
        assert {"op", "device", "n", "d", "k", "seconds", "max_rel_error"} <= set(o), o
        assert ("gflops" in o) != ("gbps" in o)
        assert o["device"] == "cpu" and o["seconds"] > 0 and o["first_seconds"] > 0
        assert (o.get("gflops") or o.get("gbps")) > 0
        assert o["peak_bytes"] >= 0
    for n, d in ((3000, 64), (1201, 33)):
        cases = [o for o in res if (o["n"], o["d"]) == (n, d)]
        ops = {(o["op"], o.get("storage"), o.get("mode")) for o in cases}
        assert ops == {("matmul", None, None), ("normalize", None, None),
                       ("distance", None, "batched"), ("distance", None, "single"),
                       ("cosine", None, "batched"), ("cosine", None, "single")} | {
            ("topk", s, m) for s in ("f32", "f16", "i8") for m in ("batched", "single")}
        for o in cases:
            # float32 kernels are exact to float32 rounding; f16 and i8 storage are measured
            # against the float32 data, so their rounding shows.
            bound = {"f16": 2e-3, "i8": 3e-2}.get(o.get("storage"), 1e-5)
            assert o["max_rel_error"] < bound, o
            if o["op"] == "topk":
                assert o["k"] == 7 and o["matrix_bytes"] > 0 and o["peak_bytes"] >= o["matrix_bytes"]
                assert o["queries"] == (4 if o["mode"] == "batched" else 1)
            if o["op"] == "matmul":
                assert o["k"] == d
    # The same cases appear in the text table.
    assert r.stdout.count("topk f16 batched") == 2
    assert "plain read of 3000 x 64 float32" in r.stdout


def test_bench_ops_filter_and_stdout_json():
    r = vec("bench", "--device", "cpu", "--ops", "topk", "--sizes", "500", "--repeat", 0,
            "--json", "-")
    doc = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert {o["op"] for o in doc["results"]} == {"topk"}
    assert {(o["n"], o["d"]) for o in doc["results"]} == {(500, 384)}


def test_cuda_requested_without_gpu_fails_clearly(info):
    if info["cuda_available"]:
        r = vec("bench", "--device", "cuda", "--ops", "normalize", "--sizes", "100x8",
                "--repeat", 1, "--json", "-")
        assert json.loads(r.stdout[r.stdout.index("{\n"):])["results"][0]["device"] == "cuda:0"
        return
    r = vec("bench", "--device", "cuda", "--ops", "topk", "--sizes", "10x4", rc=1)
    assert "device cuda: vec: cuda is not usable: " + info["cuda_reason"] in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["bench", "--ops", "matmul,fft"], "'fft' is not one of"),
    (["bench", "--sizes", "0x5"], "is not NxD"),
    (["bench", "--sizes", "10x"], "is not NxD"),
    (["bench", "--k", "0"], "--k"),
    (["bench", "--device", "tpu", "--sizes", "10x4"], "not one of cpu, cuda"),
    (["frobnicate"], "is not info or bench"),
])
def test_bad_flags_say_what(args, msg):
    r = subprocess.run([DSPYC, "vec", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode in (1, 2) and msg in r.stderr, r.stderr


def test_help_names_every_flag():
    text = vec("--help").stdout
    for flag in ("--json", "--device", "--ops", "--sizes", "--k", "--queries", "--repeat",
                 "--threads"):
        assert flag in text
    top = subprocess.run([DSPYC, "--help"], capture_output=True, text=True).stdout
    assert "vec " in top


def test_kernels_match_numpy(lib, info):
    rng = np.random.default_rng(5)
    v = vecffi.Vec(lib, "auto", threads=1)
    try:
        if not info["cuda_available"]:
            assert v.device == "cpu" and v.fallback_reason == info["cuda_reason"] or \
                info["cuda_reason"] in v.fallback_reason
        a = rng.standard_normal((37, 129), dtype=np.float32)
        w = rng.standard_normal((53, 129), dtype=np.float32)  # a Linear weight [out, in]
        ref = a.astype(np.float64) @ w.astype(np.float64).T
        np.testing.assert_allclose(v.matmul_bt(a, w), ref, rtol=0, atol=1e-4 * np.abs(ref).max())

        x = rng.standard_normal((1001, 65), dtype=np.float32)
        q = rng.standard_normal((9, 65), dtype=np.float32)
        x64, q64 = x.astype(np.float64), q.astype(np.float64)
        cos = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ \
            (x64 / np.linalg.norm(x64, axis=1, keepdims=True)).T
        np.testing.assert_allclose(v.scores(vecffi.COSINE, q, x), cos, atol=1e-5)
        l2 = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
        np.testing.assert_allclose(v.scores(vecffi.L2, q[:1], x), l2[:1], rtol=1e-5)
        np.testing.assert_allclose(v.scores(vecffi.L2, q, x), l2, rtol=1e-4, atol=1e-3)

        xn = x.copy()
        v.normalize(xn)
        np.testing.assert_allclose(xn, x64 / np.linalg.norm(x64, axis=1, keepdims=True),
                                   atol=1e-6)

        m = v.matrix(x)
        for nq in (1, 9):
            s, ids = m.topk(q[:nq], 10)
            want = np.argsort(-(q64[:nq] @ x64.T), axis=1, kind="stable")[:, :10]
            assert (ids == want).all()
            np.testing.assert_allclose(s, np.take_along_axis(q64[:nq] @ x64.T, want, 1),
                                       rtol=1e-5)
        s, ids = m.topk(q[:2], 2000)  # k > n: the rest is padding
        assert (ids[:, 1001:] == -1).all() and np.isneginf(s[:, 1001:]).all()
        assert sorted(ids[0, :1001]) == list(range(1001))
        s, ids = m.topk(q[:3], 5, metric=vecffi.L2)
        assert (ids == np.argsort(l2[:3], axis=1, kind="stable")[:, :5]).all()
        m.close()
        # int8 storage finds nearly the same neighbours as float32 on this data.
        m8 = v.matrix(x, vecffi.I8)
        _, ids8 = m8.topk(q, 10)
        want = np.argsort(-(q64 @ x64.T), axis=1)[:, :10]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids8, want)])
        assert overlap >= 0.8, overlap
        assert m8.nbytes == 1001 * (128 + 12)  # rows padded to 64 bytes, scale, sum, norm
        m8.close()
        assert v.memory()["current_bytes"] == 0
    finally:
        v.close()


def test_budget_through_the_api(lib):
    x = np.random.default_rng(1).standard_normal((2000, 48), dtype=np.float32)
    v = vecffi.Vec(lib, "cpu", budget=100_000)
    try:
        with pytest.raises(vecffi.VecError) as e:
            v.matrix(x)
        assert e.value.code == -1 and "budget" in str(e.value)
        assert v.memory()["failures"] == 1
    finally:
        v.close()
