"""The same seed selects the same examples as DSPy: BootstrapFewShotWithRandomSearch run by
DSPy and by `dspyc optimize --optimizer random-search --seed 0` against the same simulator
give, for every seed of the schedule (zero-shot, labeled, unshuffled bootstrap, shuffled
bootstraps of random size), the same demos (compared by question) and the same dev score."""
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
CANDIDATES = 5


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def dspy_schedule(base):
    from dspy.teleprompt import BootstrapFewShotWithRandomSearch

    lm = dspy.LM("openai/dspyc-sim", api_base=base, api_key="sim", cache=False)
    train = [dspy.Example(**x).with_inputs("question") for x in load(TRAIN)]
    dev = [dspy.Example(**x).with_inputs("question") for x in load(DEV)]

    def metric(example, pred, trace=None):
        return dspy.evaluate.answer_exact_match(example, pred)

    opt = BootstrapFewShotWithRandomSearch(metric=metric, num_candidate_programs=CANDIDATES,
                                           max_bootstrapped_demos=4, max_labeled_demos=16,
                                           num_threads=8)
    with dspy.context(lm=lm):
        best = opt.compile(dspy.Predict("question -> answer"), trainset=train, valset=dev)
    out = {}
    for c in best.candidate_programs:
        out[c["seed"]] = ([d["question"] for d in c["program"].predictors()[0].demos],
                          c["score"])
    return out


def test_random_search_picks_dspys_demos_for_each_seed(tmp_path):
    _, base = start_sim()
    want = dspy_schedule(base)
    save, report = tmp_path / "s.json", tmp_path / "r.json"
    r = subprocess.run([DSPYC, "optimize", "--signature", "question -> answer", "--optimizer",
                        "random-search", "--trainset", TRAIN, "--valset", DEV, "--metric",
                        "exact_match:answer", "--save", str(save), "--report", str(report),
                        "--seed", "0", "--num-candidates", str(CANDIDATES), "-q",
                        "--base-url", base, "--model", "openai/dspyc-sim"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = {t["seed"]: ([d["question"] for d in t["demo_sets"][0]], t["score"])
           for t in json.loads(report.read_text())["trials"]}
    assert set(got) == set(want)
    for seed in sorted(want):
        assert got[seed][0] == want[seed][0], f"schedule seed {seed}: demos differ"
        assert got[seed][1] == pytest.approx(want[seed][1]), f"schedule seed {seed}: score"
