"""Programs optimized by `dspyc optimize` against real DSPy: DSPy loads each saved state
(labeled, bootstrap, random-search, mipro, gepa, genetic), runs it with its own Evaluate against the same
simulator, and gets the score dspyc reported, within one example."""
import json
import os
import subprocess

import pytest

dspy = pytest.importorskip("dspy")

from e2e.conftest import DSPYC, ROOT, start_sim  # noqa: E402

pytestmark = pytest.mark.compat

ARITH = os.path.join(ROOT, "examples", "arith")
TRAIN = os.path.join(ARITH, "train.jsonl")
DEV = os.path.join(ARITH, "dev.jsonl")


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


CASES = [("labeled", "predict"), ("bootstrap", "predict"), ("random-search", "predict"),
         ("mipro", "predict"), ("gepa", "predict"), ("genetic", "predict"), ("bootstrap", "cot"),
         ("mipro", "cot")]


@pytest.mark.parametrize("optimizer,module", CASES, ids=[f"{o}-{m}" for o, m in CASES])
def test_dspy_reproduces_the_reported_score(tmp_path, optimizer, module):
    _, base = start_sim()
    save, report = tmp_path / "state.json", tmp_path / "report.json"
    extra = {"random-search": ["--num-candidates", "4"],
             "gepa": ["--auto", "light"]}.get(optimizer, [])
    r = subprocess.run([DSPYC, "optimize", "--signature", "question -> answer", "--module",
                        module, "--optimizer", optimizer, "--trainset", TRAIN, "--valset", DEV,
                        "--metric", "exact_match:answer", "--save", str(save), "--report",
                        str(report), "--seed", "2", "-q", "--base-url", base, "--model",
                        "openai/dspyc-sim", *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    reported = json.loads(report.read_text())["best"]["score"]

    program = dspy.Predict("question -> answer") if module == "predict" else \
        dspy.ChainOfThought("question -> answer")
    program.load(str(save))
    lm = dspy.LM("openai/dspyc-sim", api_base=base, api_key="sim", cache=False)
    devset = [dspy.Example(**x).with_inputs("question") for x in load(DEV)]

    def metric(example, pred, trace=None):
        return dspy.evaluate.answer_exact_match(example, pred)

    with dspy.context(lm=lm):
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=8)(program)
    score = result.score if hasattr(result, "score") else result
    assert abs(score - reported) <= 100.0 / len(devset), (score, reported)
