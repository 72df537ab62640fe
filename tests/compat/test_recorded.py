"""Real DSPy and dspyc call the same simulator, which records every request; the messages
each sends for the same program and inputs must be identical byte for byte, and both must
read the simulator's answers into the same predictions."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from conftest import DSPYC, start_sim  # noqa: E402

pytestmark = [pytest.mark.compat]

dspy = pytest.importorskip("dspy")

CASES = [
    ("predict", "question -> answer", None, [], {"question": "What is the capital of France?"}),
    ("cot", "question -> answer", None, [], {"question": "Why is the sky blue?"}),
    ("predict", "question: str, k: int -> answer: list[str]", None, [],
     {"question": "Name primes", "k": 3}),
    ("cot", "context: list[str], question -> answer: int, confident: bool",
     "Answer with care.\n\nShow your arithmetic.",
     [{"context": ["a", "b"], "question": "1+1?", "answer": 2, "confident": True},
      {"question": "2+2?", "answer": 4}],
     {"context": ["Ava has 3 apples.", "She buys 4 more."], "question": "How many now?"}),
    ("predict", "sentence -> sentiment: Literal['positive', 'negative', 'neutral']", None,
     [{"sentence": "great film", "sentiment": "positive"}], {"sentence": "dull plot"}),
]


def recorded_messages(path):
    out = []
    with open(path) as f:
        for line in f:
            body = json.loads(line)["body"]
            if isinstance(body, dict) and "messages" in body:
                out.append(body["messages"])
    return out


def run_dspy(base, kind, sig, instructions, demos, inputs):
    lm = dspy.LM("openai/dspyc-sim", api_base=base, api_key="sim", cache=False)
    signature = dspy.Signature(sig, instructions) if instructions else dspy.Signature(sig)
    module = dspy.Predict(signature) if kind == "predict" else dspy.ChainOfThought(signature)
    for p in module.predictors():
        p.demos = [dspy.Example(**d) for d in demos]
    with dspy.context(lm=lm):
        pred = module(**inputs)
    return dict(pred.items())


def run_dspyc(base, kind, sig, instructions, demos, inputs, tmp_path):
    args = [DSPYC, "predict", "--module", kind, "--base-url", base, "--model",
            "openai/dspyc-sim"]
    if instructions:
        args += ["--instructions", instructions]
    if demos:
        d = tmp_path / "demos.jsonl"
        d.write_text("".join(json.dumps(x) + "\n" for x in demos))
        args += ["--demos", str(d)]
    args.append(sig)
    args += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in inputs.items()]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_same_messages_and_predictions_as_dspy(case, tmp_path):
    kind, sig, instructions, demos, inputs = case
    rec_a, rec_b = tmp_path / "dspy.jsonl", tmp_path / "dspyc.jsonl"
    _, base_a = start_sim("--record", str(rec_a))
    _, base_b = start_sim("--record", str(rec_b))
    theirs = run_dspy(base_a, kind, sig, instructions, demos, inputs)
    ours = run_dspyc(base_b, kind, sig, instructions, demos, inputs, tmp_path)
    msgs_a, msgs_b = recorded_messages(rec_a), recorded_messages(rec_b)
    assert len(msgs_a) == len(msgs_b) == 1
    assert msgs_b[0] == msgs_a[0]
    assert ours == theirs
