"""The JSON adapter's structured outputs against real DSPy: for a model litellm says supports
response schemas, DSPy and dspyc call the same recording simulator; the JSON schema each sends
as response_format must be the same bytes, and dspyc must decide which models get one as
DSPy does."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from conftest import DSPYC, start_sim  # noqa: E402

pytestmark = [pytest.mark.compat]

dspy = pytest.importorskip("dspy")

MODEL = "openai/gpt-4o-mini"

SIGNATURES = [
    "question -> answer",
    "question -> answer: str, n: int, x: float, ok: bool",
    "question -> items: list[str], nested: list[list[int]], bare: list",
    "question -> choice: Literal['a', 'b'], one: Literal['only'], mixed: Literal[1, 'a', True]",
    "question -> maybe: Optional[int], maybe_list: Optional[list[str]], u: Union[int, str, None]",
    "question -> rows: list[dict[str, int]], anything: Any, pair: tuple[int, str]",
    "question -> final_answer_X: str, a1b2: int, ab_: bool, plain: dict",
    # An open-ended mapping: DSPy sends JSON mode instead.
    "question -> counts: dict[str, int], answer",
]


def first_body(path):
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec["path"].endswith("/chat/completions"):
                return rec["body"]
    raise AssertionError(f"no chat request recorded in {path}")


def dspy_request(base, sig):
    lm = dspy.LM(MODEL, api_base=base, api_key="sim", cache=False, num_retries=0)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        try:
            dspy.Predict(dspy.Signature(sig))(question="What is 2+2?")
        except Exception:  # the simulator's answer need not fit: the request is what counts
            pass


@pytest.mark.parametrize("sig", SIGNATURES)
def test_same_response_format_as_dspy(sig, tmp_path):
    rec_a, rec_b = tmp_path / "dspy.jsonl", tmp_path / "dspyc.jsonl"
    _, base_a = start_sim("--record", str(rec_a))
    _, base_b = start_sim("--record", str(rec_b))
    dspy_request(base_a, sig)
    r = subprocess.run([DSPYC, "predict", "--adapter", "json", "--base-url", base_b, "--model",
                        MODEL, "--max-retries", "0", sig, "question=What is 2+2?"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    theirs = first_body(rec_a)["response_format"]
    ours = first_body(rec_b)["response_format"]
    if theirs["type"] == "json_schema":
        # The schema byte for byte (member order included); the wrapper's members are
        # ordered differently by DSPy 3.3 (through litellm) and 3.4, so compared as values.
        assert json.dumps(ours["json_schema"]["schema"]) == json.dumps(
            theirs["json_schema"]["schema"])
    assert ours == theirs


# Names from litellm's model table (true, false, dated and fine-tuned forms) and names it
# does not know.
NAMES = [
    "openai/gpt-4o-mini", "gpt-4o-mini", "openai/gpt-4o", "openai/gpt-4o-2024-08-06",
    "openai/gpt-4o-2024-05-13", "openai/gpt-4.1-nano", "openai/gpt-5", "openai/o1",
    "openai/o3-mini", "openai/o1-mini", "openai/gpt-4-turbo", "openai/gpt-3.5-turbo",
    "openai/gpt-4", "openai/ft:gpt-4o-mini-2024-07-18:a:b", "openai/gpt-4o-mini-foo",
    "openai/dspyc-sim", "openai/gpt-5-0125", "openai/chatgpt-4o-latest", "openai/llama-3-8b",
]
# Forms litellm (and so DSPy 3.3) resolves to a table entry -- another case, an unknown
# date, a fine-tuned model's id -- where DSPy 3.4's own model table matches names exactly.
RESOLVED = ["openai/GPT-4O-MINI", "openai/gpt-4o-mini-2099-01-01",
            "openai/ft:gpt-4o-mini-2024-07-18:org::abc123", "openai/ft:gpt-3.5-turbo:org:s:id"]


def litellm_says(name):
    import litellm
    provider = name.split("/", 1)[0] if "/" in name else "openai"
    return bool(litellm.supports_response_schema(model=name, custom_llm_provider=provider))


def test_which_models_get_structured_outputs_as_in_dspy(tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = start_sim("--record", str(rec))
    names = NAMES + RESOLVED
    for i, name in enumerate(names):
        r = subprocess.run([DSPYC, "predict", "--adapter", "json", "--base-url", base,
                            "--model", name, "--max-retries", "0", "question -> answer",
                            f"question=q{i}"], capture_output=True, text=True, timeout=60)
        assert r.returncode in (0, 1), r.stderr
    bodies = [json.loads(line)["body"] for line in rec.read_text().splitlines()]
    bodies = [b for b in bodies if isinstance(b, dict) and "messages" in b]
    got = {}
    for i, name in enumerate(names):
        mine = [b for b in bodies if f"q{i}" in b["messages"][-1]["content"].split()]
        got[name] = mine[0]["response_format"]["type"] == "json_schema"
    assert got == {name: litellm_says(name) for name in names}
    dspy_says = {name: bool(dspy.LM(name, api_base=base, api_key="sim").supports_response_schema)
                 for name in NAMES}
    assert {name: got[name] for name in NAMES} == dspy_says
    assert any(dspy_says.values()) and not all(dspy_says.values())
    assert all(got[name] for name in RESOLVED[:3]) and not got[RESOLVED[3]]
