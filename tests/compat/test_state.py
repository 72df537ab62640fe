"""Saved-program state against real DSPy: files DSPy's module.save() writes (bare Predict,
ChainOfThought, a two-predictor module, with demos and custom instructions) load into
dspyc with everything arriving, dspyc writes them back byte for byte, and files dspyc
writes load into DSPy with instructions, field prefixes/descriptions and demos intact.

Drives the compat_state_tool helper (tests/compat/state_tool.c) from $DSPYC_BUILD
(default build/)."""
import json
import os
import subprocess

import pytest

dspy = pytest.importorskip("dspy")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DSPYC_BUILD", "build"))
TOOL = os.path.join(BUILD, "compat_state_tool")

pytestmark = [pytest.mark.compat, pytest.mark.skipif(not os.path.exists(TOOL), reason=f"{TOOL} is not built")]

# The DSPy version dspyc records in the files it writes afresh (src/program/state.c); a
# file it loaded keeps the metadata it came with.
DSPYC_STATE_DSPY = "3.4.1"

PREDICT_SPEC = {"predictors": [{"signature": "question -> answer"}]}
COT_SPEC = {"predictors": [{"module": "cot", "signature": "question -> answer"}]}
RAG_SPEC = {"predictors": [
    {"name": "gen_query", "signature": "question -> query"},
    {"name": "answer", "module": "cot", "signature": "context: list[str], question -> answer"},
]}


class RAG(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen_query = dspy.Predict("question -> query")
        self.answer = dspy.ChainOfThought("context: list[str], question -> answer")


def tool(*args, ok=True):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if args[0] == "load" else None
    assert r.returncode == 1, (r.stdout, r.stderr)
    return json.loads(r.stderr)


def dspy_predictors(module):
    """(state name, predictor) as DSPy's save() names them."""
    if isinstance(module, dspy.Predict):
        return [("self", module)]
    return list(module.named_predictors())


def demos_as_dicts(pred):
    return [d.toDict() if hasattr(d, "toDict") else dict(d) for d in pred.demos]


def assert_same(module, loaded):
    """What dspyc loaded equals what the DSPy module holds."""
    preds = dspy_predictors(module)
    assert [name for name, _ in preds] == [p["state_name"] for p in loaded["predictors"]]
    for (_, pred), got in zip(preds, loaded["predictors"]):
        sig = pred.signature
        assert got["instructions"] == sig.instructions
        assert got["demos"] == demos_as_dicts(pred)
        fields = [{"name": n, "prefix": f.json_schema_extra["prefix"],
                   "desc": f.json_schema_extra["desc"]} for n, f in sig.fields.items()]
        assert got["fields"] == fields


def build_predict():
    p = dspy.Predict(dspy.Signature("question -> answer", "Answer in one word.\n\nBe brief."))
    p.demos = [dspy.Example(question="2+2?", answer="4"),
               dspy.Example(augmented=True, question="Capital of France?", answer="Paris")]
    return p, PREDICT_SPEC


def build_cot():
    c = dspy.ChainOfThought("question -> answer")
    c.predict.signature = c.predict.signature.with_instructions("Think, then answer: «ok».")
    c.predict.demos = [dspy.Example(question="1+1?", reasoning="one and one", answer="2")]
    return c, COT_SPEC


def build_rag():
    m = RAG()
    m.gen_query.signature = m.gen_query.signature.with_instructions("Write a search query.")
    m.gen_query.signature = m.gen_query.signature.with_updated_fields(
        "query", desc="a few keywords", prefix="Search Query:")
    m.gen_query.demos = [
        dspy.Example(augmented=True, question="Q0", query="some query"),
        {"question": "Q5", "answer": "Paris", "score": 0.75, "n": 3, "tags": ["a"], "m": None},
    ]
    m.answer.predict.demos = [dspy.Example(context=["c1", "c2"], question="q", reasoning="r",
                                           answer="a")]
    return m, RAG_SPEC


BUILDERS = {"predict": build_predict, "cot": build_cot, "rag": build_rag}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_dspy_file_loads_into_dspyc(kind, tmp_path):
    module, spec = BUILDERS[kind]()
    saved = tmp_path / "dspy.json"
    module.save(str(saved))
    loaded = tool("load", json.dumps(spec), str(saved))
    assert_same(module, loaded)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_dspyc_rewrites_dspy_file_byte_for_byte(kind, tmp_path):
    module, spec = BUILDERS[kind]()
    saved, again = tmp_path / "dspy.json", tmp_path / "dspyc.json"
    module.save(str(saved))
    tool("save", json.dumps(spec), str(again), str(saved))
    assert again.read_bytes() == saved.read_bytes()


def spec_with_state():
    """A program file carrying instructions, demos and field texts of its own."""
    return {"predictors": [
        {"name": "gen_query", "signature": "question -> query",
         "instructions": "Rewrite the question as a query.\n\nUse «keywords».",
         "fields": {"query": {"desc": "keywords only", "prefix": "Search:"}},
         "demos": [{"question": "Who wrote Dune?", "query": "Dune author"},
                   {"augmented": True, "question": "q2", "query": "k2", "score": 0.5}]},
        {"name": "answer", "module": "cot", "signature": "context: list[str], question -> answer",
         "fields": {"reasoning": {"desc": "step by step"}},
         "demos": [{"context": ["x"], "question": "q", "reasoning": "r", "answer": "a"}]},
    ]}


def test_dspy_loads_dspyc_file(tmp_path):
    spec = spec_with_state()
    out = tmp_path / "dspyc.json"
    tool("save", json.dumps(spec), str(out))
    module = RAG()
    module.load(str(out))
    gq, ans = module.gen_query, module.answer.predict
    assert gq.signature.instructions == "Rewrite the question as a query.\n\nUse «keywords»."
    assert gq.signature.fields["query"].json_schema_extra["prefix"] == "Search:"
    assert gq.signature.fields["query"].json_schema_extra["desc"] == "keywords only"
    assert demos_as_dicts(gq) == spec["predictors"][0]["demos"]
    assert ans.signature.fields["reasoning"].json_schema_extra["desc"] == "step by step"
    assert demos_as_dicts(ans) == spec["predictors"][1]["demos"]
    assert ans.signature.instructions == (
        "Given the fields `context`, `question`, produce the fields `answer`.")
    # DSPy writes the same file back, but for the version it records: dspyc writes the
    # newest DSPy it matches (DSPYC_STATE_DSPY), DSPy its own.
    again = tmp_path / "dspy.json"
    module.save(str(again))
    assert f'"dspy": "{DSPYC_STATE_DSPY}"'.encode() in out.read_bytes()
    assert again.read_bytes() == out.read_bytes().replace(
        f'"dspy": "{DSPYC_STATE_DSPY}"'.encode(), f'"dspy": "{dspy.__version__}"'.encode())


@pytest.mark.parametrize("kind", ["predict", "cot"])
def test_dspy_loads_dspyc_single_module(kind, tmp_path):
    module, spec = BUILDERS[kind]()
    spec = json.loads(json.dumps(spec))
    spec["predictors"][0]["instructions"] = "Custom: answer carefully."
    spec["predictors"][0]["demos"] = [{"question": "a?", "answer": "b"}]
    out = tmp_path / "dspyc.json"
    tool("save", json.dumps(spec), str(out))
    fresh = (dspy.Predict("question -> answer") if kind == "predict"
             else dspy.ChainOfThought("question -> answer"))
    fresh.load(str(out))
    pred = dspy_predictors(fresh)[0][1]
    assert pred.signature.instructions == "Custom: answer carefully."
    assert demos_as_dicts(pred) == [{"question": "a?", "answer": "b"}]


def test_mismatched_program_is_refused(tmp_path):
    module, _ = build_rag()
    saved = tmp_path / "dspy.json"
    module.save(str(saved))
    # A program whose second predictor has one field fewer than the saved one.
    spec = {"predictors": [
        {"name": "gen_query", "signature": "question -> query"},
        {"name": "answer", "module": "cot", "signature": "question -> answer"},
    ]}
    err = tool("load", json.dumps(spec), str(saved), ok=False)
    assert err["code"] == "invalid"
    assert "4 fields but the program's has 3" in err["error"]
    # Predictor names that do not match.
    spec["predictors"][1]["name"] = "respond"
    err = tool("load", json.dumps(spec), str(saved), ok=False)
    assert err["code"] == "not_found"
    assert "answer.predict" in err["error"]
