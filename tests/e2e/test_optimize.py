"""End-to-end tests of `dspyc eval` and `dspyc optimize` on examples/arith against the
simulator: scores as DSPy reports them, each optimizer raising the dev score by a stated
margin, reproducibility, resume after kill -9, the cycle timer, budgets, dry runs, and bad
inputs refused before any LM call (the simulator's recorded request count stays 0)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from e2e.conftest import DSPYC, ROOT, start_sim

pytestmark = pytest.mark.e2e

ARITH = os.path.join(ROOT, "examples", "arith")
TRAIN = os.path.join(ARITH, "train.jsonl")
DEV = os.path.join(ARITH, "dev.jsonl")
PREDICT = ["--signature", "question -> answer"]
METRIC = ["--metric", "exact_match:answer"]


def dspyc(*args, ok=True, timeout=300):
    r = subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def optimize(tmp_path, name, *extra, ok=True):
    save, report = tmp_path / f"{name}.state.json", tmp_path / f"{name}.report.json"
    r = dspyc("optimize", *PREDICT, "--trainset", TRAIN, "--valset", DEV, *METRIC,
              "--save", save, "--report", report, "-q", *extra, ok=ok)
    rep = json.loads(report.read_text()) if report.exists() else None
    return r, save, rep


def chat_requests(record):
    if not os.path.exists(record):
        return 0
    with open(record) as f:
        return sum(1 for line in f if json.loads(line)["path"] == "/v1/chat/completions")


def test_eval_scores_like_dspy_and_writes_results(tmp_path):
    out = tmp_path / "eval.json"
    r = dspyc("eval", *PREDICT, "--devset", DEV, *METRIC, "--json", out)
    assert "Average Metric: 36.00 / 100 (36.0%)" in r.stderr
    doc = json.loads(out.read_text())
    assert doc["score"] == 36.0 and doc["n"] == 100 and doc["errors"] == 0
    assert len(doc["results"]) == 100
    first = doc["results"][0]
    assert set(first["inputs"]) == {"question"}  # the label is not an input
    assert "answer" in first["prediction"] and first["metric"] in (0.0, 1.0)
    assert sum(x["metric"] for x in doc["results"]) == 36
    # the program file (ChainOfThought with an instruction) scores higher
    r = dspyc("eval", os.path.join(ARITH, "program.json"), "--devset", DEV, *METRIC)
    assert float(r.stdout) > 36.0


def test_eval_metric_failures_are_per_example_errors(tmp_path):
    dev = tmp_path / "dev.jsonl"
    rows = [json.loads(line) for line in open(DEV)][:10]
    for i, row in enumerate(rows):
        if i % 2:
            del row["answer"]  # no label: the metric fails on this example alone
    dev.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "e.json"
    r = dspyc("eval", *PREDICT, "--devset", dev, *METRIC, "--json", out, ok=False)
    assert r.returncode == 1
    doc = json.loads(out.read_text())
    assert doc["n"] == 10 and doc["errors"] == 5
    bad = [x for x in doc["results"] if "error" in x]
    assert len(bad) == 5 and all(x["metric"] == 0.0 and x["error"]["field"] == "answer"
                                 for x in bad)
    # --max-errors stops the evaluation (DSPy's max_errors)
    r = dspyc("eval", *PREDICT, "--devset", dev, *METRIC, "--max-errors", "2",
              "--concurrency", "1", ok=False)
    assert r.returncode == 1 and "max_errors" in r.stderr


def test_eval_concurrency_bounds_the_calls_in_flight(tmp_path):
    """--concurrency N: the simulator's in-flight peak is 1 at N = 1 and reaches N, never
    more, at N = 8 (20 ms per call, so calls overlap when they may); the score is the same."""
    import urllib.request

    peaks, scores = {}, {}
    for n in (1, 8):
        _, base = start_sim("--latency-ms", "20")
        r = dspyc("eval", *PREDICT, "--devset", DEV, *METRIC, "--concurrency", n,
                  "--base-url", base, "--model", "openai/dspyc-sim")
        scores[n] = float(r.stdout)
        with urllib.request.urlopen(base.replace("/v1", "/admin/stats")) as resp:
            stats = json.load(resp)
        assert stats["requests"] >= 100
        peaks[n] = stats["in_flight_peak"]
    assert peaks[1] == 1
    assert 4 <= peaks[8] <= 8, peaks
    assert scores[1] == scores[8] == 36.0


# Each optimizer against the unoptimized Predict program (36 on dev), with the margin it
# must beat it by.
MARGINS = {"labeled": 25, "bootstrap": 25, "random-search": 25, "mipro": 15}


@pytest.mark.parametrize("name", list(MARGINS))
def test_optimizer_raises_the_dev_score(tmp_path, name):
    r, save, rep = optimize(tmp_path, name, "--optimizer", name, "--seed", "1")
    assert rep["baseline"]["score"] == 36.0
    assert rep["best"]["score"] >= 36.0 + MARGINS[name], rep["best"]
    assert rep["trials"] and all({"trial", "kind", "score", "elapsed_s", "lm_calls"} <= set(t)
                                 for t in rep["trials"])
    assert set(rep["lm"]) >= {"calls", "prompt_tokens", "completion_tokens", "cost_usd"}
    assert set(rep["cycle"]) >= {"target_s", "elapsed_s", "iterations", "iterations_per_s",
                                 "progress", "eta_s", "warned", "exceeded"}
    assert rep["cycle"]["target_s"] == 7200 and not rep["cycle"]["exceeded"]
    # the saved state gives the reported score when evaluated again
    r = dspyc("eval", *PREDICT, "--state", save, "--devset", DEV, *METRIC)
    assert float(r.stdout) == rep["best"]["score"]
    state = json.loads(save.read_text())
    assert "demos" in state and "signature" in state  # a bare Predict: DSPy's flat format
    if name == "bootstrap":
        assert any(d.get("augmented") for d in state["demos"])
    if name == "random-search":  # the seed schedule: zero-shot, labeled, bootstrap, 8 more
        assert [t["seed"] for t in rep["trials"]] == list(range(-3, 16))
        assert rep["trials"][0]["score"] == 36.0
    if name == "mipro":
        assert any(t["kind"] == "minibatch" for t in rep["trials"])
        assert any(t["kind"] == "full" for t in rep["trials"])
        assert rep["plan"]["trials"] == 10  # light, one predictor, few-shot


def test_gepa_rewrites_the_instruction_from_feedback(tmp_path):
    """GEPA light on zero-shot Predict: the reflection model rewrites the instruction from
    the metric's feedback; only instructions change, so the ceiling is the simulator's
    instruction bonus (+0.15 accuracy)."""
    rec = tmp_path / "rec.jsonl"
    r, save, rep = optimize(tmp_path, "g", "--optimizer", "gepa", "--auto", "light",
                            "--seed", "1", "--reflection-model", "reflector",
                            "--sim", f"--record {rec}")
    assert rep["baseline"]["score"] == 36.0 and rep["best"]["score"] >= 36.0 + 5
    assert rep["plan"]["metric_calls"] == 780  # DSPy's auto_budget(1, 6, 100)
    assert 780 <= rep["lm"]["metric_calls"] <= 780 + 100 + 6
    kinds = [t["kind"] for t in rep["trials"]]
    assert "full" in kinds and kinds.count("minibatch") >= 10
    assert any(t.get("accepted") for t in rep["trials"])
    state = json.loads(save.read_text())
    assert state["demos"] == []  # GEPA changes instructions only
    inst = state["signature"]["instructions"]
    assert inst != "Given the fields `question`, produce the fields `answer`."
    bodies = [json.loads(line)["body"] for line in open(rec)]
    reflections = [b for b in bodies if b["model"] == "reflector"]
    assert reflections and all(len(b["messages"]) == 1 for b in reflections)
    prompt = reflections[0]["messages"][0]["content"]
    assert prompt.startswith("I provided an assistant with the following instructions")
    assert "## Feedback\n" in prompt and "# Example 3\n" in prompt
    # the same seed gives the same program; exactly one budget is required
    _, again, _ = optimize(tmp_path, "g2", "--optimizer", "gepa", "--auto", "light",
                           "--seed", "1", "--reflection-model", "reflector")
    assert again.read_bytes() == save.read_bytes()
    r, _, _ = optimize(tmp_path, "g3", "--optimizer", "gepa", ok=False)
    assert r.returncode == 2 and "exactly one budget" in r.stderr
    r, _, _ = optimize(tmp_path, "g4", "--optimizer", "gepa", "--max-metric-calls", "50",
                       ok=False)
    assert r.returncode == 2 and "too small for a single proposal" in r.stderr
    _, _, rep = optimize(tmp_path, "g5", "--optimizer", "gepa", "--max-full-evals", "2")
    assert rep["plan"]["metric_calls"] == 2 * (50 + 100)


def test_genetic_search_with_its_flags(tmp_path):
    r, save, rep = optimize(tmp_path, "gen", "--optimizer", "genetic", "--seed", "1")
    assert rep["best"]["score"] >= 36.0 + 25  # 5 generations of 8, demos and instructions
    kinds = [t["kind"] for t in rep["trials"]]
    assert kinds == ["minibatch", "full"] * 5
    assert all(t["population"] == 8 for t in rep["trials"] if t["kind"] == "minibatch")
    state = json.loads(save.read_text())
    assert 1 <= len(state["demos"]) <= 4
    _, again, _ = optimize(tmp_path, "gen2", "--optimizer", "genetic", "--seed", "1",
                           "--concurrency", "3")
    assert again.read_bytes() == save.read_bytes()
    def rewrites(rate):
        rec = tmp_path / f"rec{rate}.jsonl"
        _, _, rep = optimize(tmp_path, f"gen{rate}", "--optimizer", "genetic", "--seed", "1",
                             "--population", "4", "--generations", "2", "--mutation-rate",
                             rate, "--prompt-model", "rewriter", "--sim", f"--record {rec}")
        bodies = [json.loads(line)["body"] for line in open(rec)]
        return rep, [b for b in bodies if b["model"] == "rewriter"]

    small, some = rewrites(1)
    assert [t["kind"] for t in small["trials"]] == ["minibatch", "full"] * 2
    assert small["trials"][0]["population"] == 4
    # rate 1: every child's predictor mutates, by an LM rewrite (prompt model) or a demo swap
    assert some and all("new_instruction" in b["messages"][0]["content"] for b in some)
    _, none = rewrites(0)
    assert none == []


def test_mipro_proposes_instructions_from_the_prompt_model(tmp_path):
    """The simulator as prompt model: MIPROv2's proposals are instructions, not the arith
    answer to a question the proposer prompt shows, and the best one keeps hints."""
    rec = tmp_path / "rec.jsonl"
    r, save, rep = optimize(tmp_path, "m", "--optimizer", "mipro", "--seed", "1",
                            "--prompt-model", "proposer", "--sim", f"--record {rec}")
    bodies = [json.loads(line)["body"] for line in open(rec)]
    proposer = [b for b in bodies if b["model"] == "proposer"]
    assert proposer and all(b["temperature"] == 1.0 for b in proposer)
    assert any("proposed_instruction" in b["messages"][0]["content"] for b in proposer)
    cands = rep["instruction_candidates"][0]
    assert len(cands) == 3  # the original and two proposals (light: int(0.5 * 6))
    assert cands[0] == "Given the fields `question`, produce the fields `answer`."
    for inst in cands[1:]:
        assert not inst.strip().isdigit() and inst.startswith(cands[0]) or "tutor" in inst
    assert any(k in inst.lower() for inst in cands[1:]
               for k in ("step by step", "arithmetic", "verify"))


def test_same_seed_same_result_whatever_the_concurrency(tmp_path):
    _, a, ra = optimize(tmp_path, "a", "--optimizer", "mipro", "--seed", "4",
                        "--concurrency", "2")
    _, b, rb = optimize(tmp_path, "b", "--optimizer", "mipro", "--seed", "4",
                        "--concurrency", "32")
    assert a.read_bytes() == b.read_bytes()
    assert [t["score"] for t in ra["trials"]] == [t["score"] for t in rb["trials"]]
    _, c, _ = optimize(tmp_path, "c", "--optimizer", "mipro", "--seed", "5")
    _, d, _ = optimize(tmp_path, "d", "--optimizer", "random-search", "--seed", "4",
                       "--num-candidates", "3")
    _, e, _ = optimize(tmp_path, "e", "--optimizer", "random-search", "--seed", "4",
                       "--num-candidates", "3")
    assert d.read_bytes() == e.read_bytes()


def test_mipro_proposals_and_bootstraps_run_concurrently_with_the_same_result(tmp_path):
    """MIPROv2's demo-set bootstraps run at once, the proposer's first calls (dataset summary,
    program description) beside them and its proposals all at once: at --concurrency 16 the
    saved program and every trial are those of --concurrency 1, where everything runs one
    call at a time. The proposals (5 of them, 20 ms per call) arrive together instead of one
    after another, and the dataset descriptor arrives while the bootstraps still run."""
    dev = tmp_path / "dev20.jsonl"
    dev.write_text("".join(open(DEV).readlines()[:20]))
    runs = {}
    for n in ("1", "16"):
        rec = tmp_path / f"rec{n}.jsonl"
        save, report = tmp_path / f"c{n}.state.json", tmp_path / f"c{n}.report.json"
        dspyc("optimize", *PREDICT, "--trainset", TRAIN, "--valset", dev, *METRIC,
              "--save", save, "--report", report, "-q", "--optimizer", "mipro", "--seed", "4",
              "--num-candidates", "6", "--num-trials", "4", "--prompt-model", "proposer",
              "--concurrency", n, "--sim", f"--latency-ms 20 --record {rec}")
        lines = [json.loads(line) for line in open(rec)]
        runs[n] = (save.read_bytes(), json.loads(report.read_text()),
                   [x for x in lines if x["path"] == "/v1/chat/completions"])
    (s1, r1, l1), (s16, r16, l16) = runs["1"], runs["16"]
    assert s1 == s16
    strip = lambda rep: [{k: v for k, v in t.items() if k != "elapsed_s"} for t in rep["trials"]]
    assert strip(r1) == strip(r16) and len(r1["trials"]) >= 4
    assert r1["instruction_candidates"] == r16["instruction_candidates"]
    assert len(r1["instruction_candidates"][0]) == 6

    def text(x):
        return json.dumps(x["body"]["messages"])

    def proposals(lines):
        ts = [x["ts"] for x in lines if x["body"]["model"] == "proposer"
              and "generate a new instruction" in text(x)]
        assert len(ts) == 5
        return max(ts) - min(ts)

    # one after another: at least 4 round trips of 20 ms; at once: well under that
    assert proposals(l1) >= 0.08
    assert proposals(l16) < proposals(l1) / 2

    def task_calls_after_descriptor(lines):
        first = next(i for i, x in enumerate(lines) if "Given several examples" in text(x))
        prop = next(i for i, x in enumerate(lines) if "generate a new instruction" in text(x))
        return sum(1 for x in lines[first:prop] if x["body"]["model"] != "proposer")

    assert task_calls_after_descriptor(l1) == 0
    assert task_calls_after_descriptor(l16) > 0


def test_mipro_zero_shot_bootstraps_every_set_for_the_proposer(tmp_path):
    """Zero-shot MIPROv2 (both demo maxes 0): the n demo sets are bootstrapped for the
    proposer only (DSPy's 3 demos each), so each of the n - 1 proposals gets a set; the
    search has one demo choice, none, and the result is the same at any concurrency."""
    zero = ["--optimizer", "mipro", "--seed", "2", "--max-bootstrapped-demos", "0",
            "--max-labeled-demos", "0", "--num-candidates", "6", "--num-trials", "6"]
    _, a, ra = optimize(tmp_path, "z1", *zero, "--concurrency", "1")
    _, b, rb = optimize(tmp_path, "z8", *zero, "--concurrency", "8")
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text())["demos"] == []
    assert len(ra["instruction_candidates"][0]) == 6
    assert all(t["candidate"][1] == 0 for t in ra["trials"])
    strip = lambda rep: [{k: v for k, v in t.items() if k != "elapsed_s"} for t in rep["trials"]]
    assert strip(ra) == strip(rb)


def test_resume_after_kill_gives_the_uninterrupted_result(tmp_path):
    sim = ["--sim", "--latency-ms 15"]
    common = ["--optimizer", "random-search", "--seed", "3", "--num-candidates", "8", *sim]
    _, full, rfull = optimize(tmp_path, "full", *common)
    ck = tmp_path / "ck"
    save, report = tmp_path / "k.state.json", tmp_path / "k.report.json"
    cmd = [DSPYC, "optimize", *PREDICT, "--trainset", TRAIN, "--valset", DEV, *METRIC,
           "--save", str(save), "--report", str(report), "-q", *common, "--checkpoint", str(ck)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckfile = ck / "checkpoint.json"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once some trials are saved and some are not
        if ckfile.exists():
            units = json.loads(ckfile.read_text())["units"]
            if sum(k.startswith("wave:") for k in units) >= 1:
                break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    units = json.loads(ckfile.read_text())["units"]
    done = sum(k.startswith("wave:") for k in units)  # waves of 4 trials; 11 trials in all
    assert 1 <= done < 3, "the kill did not land mid-run"
    assert not save.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert save.read_bytes() == full.read_bytes()
    rk = json.loads(report.read_text())
    assert [t["score"] for t in rk["trials"]] == [t["score"] for t in rfull["trials"]]
    # finished trials were not run again; their cost still counts in the run's budget
    assert rk["lm"]["calls_this_run"] < rfull["lm"]["calls"] == rk["lm"]["calls"]
    assert rk["lm"]["metric_calls"] == rfull["lm"]["metric_calls"]
    # a checkpoint of another run is refused, naming the file
    r = dspyc("optimize", *PREDICT, "--trainset", TRAIN, "--valset", DEV, *METRIC,
              "--save", tmp_path / "x.json", "--optimizer", "random-search", "--seed", "4",
              "--checkpoint", ck, ok=False)
    assert r.returncode == 2 and "checkpoint.json" in r.stderr


def test_cycle_timer_warns_and_exceeds_with_a_short_target(tmp_path):
    _, _, rep = optimize(tmp_path, "t", "--optimizer", "random-search", "--num-candidates",
                         "2", "--target-duration", "0.000001")
    cy = rep["cycle"]
    assert cy["warned"] and cy["exceeded"] and cy["iterations"] == 5 and cy["progress"] == 1.0
    assert rep["stopped"] is None  # without --stop-at-target the run goes on
    r, _, rep = optimize(tmp_path, "s", "--optimizer", "random-search", "--num-candidates",
                         "8", "--target-duration", "0.000001", "--stop-at-target",
                         "--parallel-trials", "2")
    assert "stop-at-target" in rep["stopped"]
    assert len(rep["trials"]) == 2  # one wave, then it stopped with the best so far
    assert rep["best"]["score"] is not None
    r = dspyc("optimize", *PREDICT, "--trainset", TRAIN, *METRIC, "--save",
              tmp_path / "w.json", "--optimizer", "labeled", "--target-duration", "1e9",
              "--warn-at", "0.5")
    assert "warning" not in r.stderr and "exceeded" not in r.stderr


@pytest.fixture
def recorded(sim, tmp_path):
    rec = tmp_path / "requests.jsonl"
    _, base = sim("--record", rec)
    return ["--base-url", base, "--model", "m"], rec


def test_bad_inputs_are_refused_before_any_lm_call(tmp_path, recorded):
    ep, rec = recorded
    bad_line = tmp_path / "bad_line.jsonl"
    bad_line.write_text('{"question": "a", "answer": "1"}\n\n[1, 2]\n')
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "a", "answer": "1"}\n{"q": "b", "answer": "2"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    state = tmp_path / "state.json"
    state.write_text('{"predict": {"demos": []}}')
    cases = [
        (["--trainset", bad_line, "--optimizer", "bootstrap", *METRIC], f"{bad_line}:3"),
        (["--trainset", missing, "--optimizer", "bootstrap", *METRIC],
         f"{missing}:2: trainset example 2 has no field 'question'"),
        (["--trainset", TRAIN, "--valset", missing, "--optimizer", "bootstrap", *METRIC],
         f"{missing}:2: valset example 2"),
        (["--trainset", empty, "--optimizer", "bootstrap", *METRIC], f"{empty}: no examples"),
        (["--trainset", TRAIN, "--optimizer", "bootstrap", "--metric", "exact_match:answr"],
         "'answr' is not an output field"),
        (["--trainset", TRAIN, "--optimizer", "bootstrap", "--metric", "bleu:answer"],
         "is not exact_match:FIELD"),
        (["--trainset", TRAIN, "--optimizer", "simba", *METRIC], "'simba' is not one of"),
        (["--trainset", TRAIN, "--optimizer", "mipro", "--auto", "huge", *METRIC],
         "--auto 'huge'"),
        (["--trainset", TRAIN, "--optimizer", "bootstrap", "--auto", "light", *METRIC],
         "--auto is a budget of mipro"),
        (["--trainset", TRAIN, "--optimizer", "bootstrap", "--state", state, *METRIC],
         f"{state}:1"),
        (["--trainset", TRAIN, "--optimizer", "mipro", "--max-metric-calls", "20", *METRIC],
         "too small for a single proposal"),
        (["--trainset", TRAIN, "--optimizer", "mipro", "--max-tokens", "500", *METRIC],
         "too small for a single proposal"),
        (["--trainset", TRAIN, "--optimizer", "mipro", "--max-cost", "0.0001", "--price-in",
          "5", *METRIC], "too small for a single proposal"),
    ]
    for args, message in cases:
        r = dspyc("optimize", *PREDICT, "--save", tmp_path / "s.json", *ep, *args, ok=False)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert not (tmp_path / "s.json").exists()
    assert chat_requests(rec) == 0


def test_dry_run_plans_and_calls_nothing(tmp_path, recorded):
    ep, rec = recorded
    report = tmp_path / "plan.json"
    r = dspyc("optimize", *PREDICT, "--trainset", TRAIN, "--valset", DEV, *METRIC,
              "--optimizer", "mipro", "--dry-run", "--report", report, "--price-in", "0.15",
              "--price-out", "0.6", *ep)
    assert "dry run: mipro" in r.stdout and "no LM call was made" in r.stdout
    plan = json.loads(report.read_text())["plan"]
    assert plan["trials"] == 10 and plan["minibatch_size"] == 35
    assert plan["task_calls"] > 35 * 10 and plan["prompt_calls"] == 10 + 3 + 2
    assert plan["tokens"] > 0 and plan["cost_usd"] > 0
    assert chat_requests(rec) == 0


def test_budgets_stop_with_the_best_so_far(tmp_path):
    # priced so the first trial fits but the whole run does not
    r, save, rep = optimize(tmp_path, "c", "--optimizer", "mipro", "--price-in", "2",
                            "--max-cost", "0.3", "--parallel-trials", "2")
    assert rep["stopped"].startswith("max-cost")
    assert rep["lm"]["cost_usd"] >= 0.3 and save.exists()
    assert len([t for t in rep["trials"] if t["kind"] == "minibatch"]) < 10
    r, save, rep = optimize(tmp_path, "t", "--optimizer", "random-search", "--max-tokens",
                            "400000", "--parallel-trials", "2")
    assert rep["stopped"].startswith("max-tokens") and len(rep["trials"]) < 19


def test_failing_lm_calls_are_failed_trials_until_max_errors(tmp_path):
    flaky = ["--sim", "--fail-500 0.2 --seed 5", "--max-retries", "0"]
    r, save, rep = optimize(tmp_path, "f", "--optimizer", "bootstrap", *flaky)
    assert r.returncode == 0 and rep["lm"]["errors"] > 0 and save.exists()
    r, save, rep = optimize(tmp_path, "g", "--optimizer", "random-search", *flaky,
                            "--max-errors", "5", ok=False)
    assert r.returncode == 1 and rep["stopped"].startswith("max-errors")


def test_judge_metric(tmp_path):
    judge = tmp_path / "judge.json"
    judge.write_text(json.dumps({"predictors": [
        {"signature": "question, answer, pred_answer -> score: float, feedback"}]}))
    out = tmp_path / "j.json"
    dspyc("eval", *PREDICT, "--devset", DEV, "--metric", f"judge:{judge}", "--json", out)
    doc = json.loads(out.read_text())
    assert doc["n"] == 100 and doc["errors"] == 0
    assert all(0.0 <= x["metric"] <= 1.0 and "feedback" in x for x in doc["results"])
    nojudge = tmp_path / "nojudge.json"
    nojudge.write_text(json.dumps({"predictors": [{"signature": "question -> verdict"}]}))
    r = dspyc("eval", *PREDICT, "--devset", DEV, "--metric", f"judge:{nojudge}", ok=False)
    assert r.returncode == 2 and "no output named 'score'" in r.stderr


VENV = sys.prefix if sys.prefix != sys.base_prefix else os.path.join(ROOT, ".venv")


def test_python_metric_called_as_dspy_calls_it(tmp_path):
    (tmp_path / "mymetric.py").write_text(
        "import dspy\n"
        "calls = []\n"
        "def exact(example, pred, trace=None):\n"
        "    assert isinstance(example, dspy.Example) and isinstance(pred, dspy.Prediction)\n"
        "    return example.answer == pred.answer\n"
        "def gepa(gold, pred, trace=None, pred_name=None, pred_trace=None):\n"
        "    ok = gold.answer == pred.answer\n"
        "    return dspy.Prediction(score=float(ok), feedback='ok' if ok else 'wrong')\n"
        "def broken(example, pred, trace=None):\n"
        "    raise ValueError('boom')\n")
    env = dict(os.environ, VIRTUAL_ENV=VENV)

    def run(*args):
        return subprocess.run([DSPYC, *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)

    out = tmp_path / "e.json"
    r = run("eval", *PREDICT, "--devset", DEV, "--metric-python", "mymetric:exact")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == 36.0  # the same as exact_match:answer
    r = run("eval", *PREDICT, "--devset", DEV, "--metric-python", "mymetric:gepa", "--json",
            out)
    doc = json.loads(out.read_text())
    assert doc["score"] == 36.0 and {x["feedback"] for x in doc["results"]} == {"ok", "wrong"}
    r = run("eval", *PREDICT, "--devset", DEV, "--metric-python", "mymetric:broken", "--json",
            out)
    doc = json.loads(out.read_text())
    assert r.returncode == 1 and doc["errors"] == 100
    assert "ValueError" in doc["results"][0]["error"]["message"]
    r = run("eval", *PREDICT, "--devset", DEV, "--metric-python", "mymetric:missing")
    assert r.returncode == 2 and "missing" in r.stderr
    save = tmp_path / "s.json"
    r = run("optimize", *PREDICT, "--optimizer", "bootstrap", "--trainset", TRAIN, "--valset",
            DEV, "--metric-python", "mymetric:exact", "--save", save, "-q")
    assert r.returncode == 0, r.stderr
    r = run("eval", *PREDICT, "--state", save, "--devset", DEV, *METRIC)
    assert float(r.stdout) == 71.0


@pytest.mark.parametrize("name,extra", [("mipro", []), ("gepa", ["--auto", "light"]),
                                        ("genetic", ["--generations", "3"])])
def test_resume_from_any_prefix_of_the_checkpoint(tmp_path, name, extra):
    """What a kill leaves is a prefix of the units (they are written in order, each with a
    rename): resuming from any prefix ends exactly as the uninterrupted run."""
    ck = tmp_path / "ck"
    _, full, rfull = optimize(tmp_path, "full", "--optimizer", name, "--seed", "2", *extra,
                              "--checkpoint", ck)
    doc = json.loads((ck / "checkpoint.json").read_text())
    units = list(doc["units"].items())
    assert len(units) >= 4
    for keep in (1, len(units) // 2, len(units) - 1):
        part = tmp_path / f"ck{keep}"
        part.mkdir()
        (part / "checkpoint.json").write_text(json.dumps(
            {"version": 3, "key": doc["key"], "units": dict(units[:keep])}))
        _, save, rep = optimize(tmp_path, f"r{keep}", "--optimizer", name, "--seed", "2",
                                *extra, "--checkpoint", part)
        assert save.read_bytes() == full.read_bytes(), (name, keep)
        assert rep["best"] == rfull["best"]
        assert [t["score"] for t in rep["trials"]] == [t["score"] for t in rfull["trials"]]


def test_flags_take_effect(tmp_path):
    rec = tmp_path / "rec.jsonl"
    # --max-bootstrapped-demos, --max-labeled-demos: the saved demos; --task-model: the model
    # the program's calls name; --max-rounds 2: a second round at temperature 1.0
    _, save, rep = optimize(tmp_path, "b", "--optimizer", "bootstrap",
                            "--max-bootstrapped-demos", "2", "--max-labeled-demos", "5",
                            "--max-rounds", "2", "--task-model", "student-model",
                            "--sim", f"--record {rec}")
    demos = json.loads(save.read_text())["demos"]
    assert len(demos) == 5 and sum(1 for d in demos if d.get("augmented")) == 2
    bodies = [json.loads(line)["body"] for line in open(rec)]
    assert {b["model"] for b in bodies} == {"student-model"}
    assert any(b.get("temperature") == 1.0 for b in bodies)  # round 2 for a failed example
    # --num-trials (mipro without --auto) and --num-candidates
    _, _, rep = optimize(tmp_path, "m", "--optimizer", "mipro", "--num-trials", "4",
                         "--num-candidates", "3")
    assert rep["plan"]["trials"] == 4 and len(rep["instruction_candidates"][0]) == 3
    assert [t["trial"] for t in rep["trials"] if t["kind"] == "minibatch"] == [1, 2, 3, 4]
    r, _, _ = optimize(tmp_path, "x", "--optimizer", "mipro", "--num-trials", "4", "--auto",
                       "light", ok=False)
    assert r.returncode == 2 and "exclude each other" in r.stderr
    # eval --failure-score: failed examples score it
    dev = tmp_path / "dev.jsonl"
    dev.write_text('{"question": "Ava has 3 apples. She buys 2 more. How many?", '
                   '"answer": "5"}\n{"nothing": 1}\n')
    out = tmp_path / "e.json"
    dspyc("eval", *PREDICT, "--devset", dev, *METRIC, "--failure-score", "0.5", "--json", out,
          ok=False)
    doc = json.loads(out.read_text())
    assert doc["results"][1]["metric"] == 0.5 and doc["errors"] == 1


MIX_METRIC = (
    "import dspy\n"
    "def mix(gold, pred, trace=None, pred_name=None, pred_trace=None):\n"
    "    # both predictors' answers count; on multiples of 4 this metric rewards a miss, so an\n"
    "    # instruction that helps is also worse somewhere and siblings share the front\n"
    "    want_right = int(gold.answer) % 4 != 0\n"
    "    s = [(str(v).strip() == gold.answer) == want_right for v in (pred.answer, pred.result)]\n"
    "    fb = 'Correct.' if all(s) else f'Wrong: the expected answer is {gold.answer}.'\n"
    "    return dspy.Prediction(score=sum(s) / 2, feedback=fb)\n")


def test_gepa_merge_combines_two_predictors_changes(tmp_path):
    """GEPA's merge (on by default, as in DSPy) on a two-predictor program: the merged
    candidate takes each predictor's instruction from the parent that changed it from their
    common ancestor; the same seed gives the same merges; --no-merge and
    --max-merge-invocations 0 schedule none."""
    (tmp_path / "mix.py").write_text(MIX_METRIC)
    env = dict(os.environ, VIRTUAL_ENV=VENV)

    def gepa(name, *extra):
        save, report = tmp_path / f"{name}.json", tmp_path / f"{name}.report.json"
        r = subprocess.run([DSPYC, "optimize", os.path.join(ARITH, "two_step.json"),
                            "--optimizer", "gepa", "--auto", "light", "--seed", "5",
                            "--trainset", TRAIN, "--valset", DEV, "--metric-python", "mix:mix",
                            "--reflection-model", "reflector", "--save", save, "--report",
                            report, "-q", *extra], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        return save, json.loads(report.read_text())

    save, rep = gepa("a")
    merges = [t for t in rep["trials"] if t["kind"] == "merge"]
    assert merges and rep["merge"]["attempts"] >= len(merges)
    assert rep["merge"] == {"enabled": True, "max_invocations": 5,
                            "attempts": rep["merge"]["attempts"],
                            "accepted": sum(t["accepted"] for t in merges)}
    ok = [t for t in merges if t["accepted"]]
    assert ok, "no merge was accepted"
    m = ok[0]
    assert len(m["subsample"]) == 5 and m["sum"] >= max(m["parent_sums"])
    full = {t["candidate"]: t for t in rep["trials"] if t["kind"] == "full"}
    seed_inst = ["Answer the question."] * 2
    inst = {0: seed_inst, **{c: t["instructions"] for c, t in full.items()}}
    merged = next(t for t in full.values() if t["parents"] == m["parents"])
    i, j = m["parents"]
    a = inst[m["ancestor"]]
    score = {0: rep["baseline"]["score"], **{c: t["score"] for c, t in full.items()}}
    for p in range(2):  # gepa's rule, predictor by predictor
        ci, cj = inst[i][p] != a[p], inst[j][p] != a[p]
        if ci != cj and inst[i][p] != inst[j][p]:  # one changed it: that change
            want = inst[i][p] if ci else inst[j][p]
        elif ci and cj:  # both did: the better parent's (a tie is a coin)
            want = inst[i][p] if score[i] > score[j] else inst[j][p] \
                if score[j] > score[i] else merged["instructions"][p]
        else:
            want = inst[i][p]
        assert merged["instructions"][p] == want, p
    # a change only one parent made is in the merge
    assert any(inst[x][p] != a[p] and merged["instructions"][p] == inst[x][p]
               for x in (i, j) for p in range(2))
    # seed-reproducible
    again, rep2 = gepa("b")
    assert again.read_bytes() == save.read_bytes()
    strip = lambda ts: [{k: v for k, v in t.items() if k != "elapsed_s"} for t in ts]
    assert strip(rep2["trials"]) == strip(rep["trials"])
    # resumed from a checkpoint cut before or after the first merge: the same end
    ck = tmp_path / "ck"
    gepa("c", "--checkpoint", ck)
    doc = json.loads((ck / "checkpoint.json").read_text())
    units = list(doc["units"].items())
    at = next(k for k, (key, _) in enumerate(units) if key.endswith(":merge"))
    for keep in (at, at + 1):
        part = tmp_path / f"ck{keep}"
        part.mkdir()
        (part / "checkpoint.json").write_text(json.dumps(
            {"version": 3, "key": doc["key"], "units": dict(units[:keep])}))
        resumed, rr = gepa(f"r{keep}", "--checkpoint", part)
        assert resumed.read_bytes() == save.read_bytes(), keep
        assert [t["score"] for t in rr["trials"]] == [t["score"] for t in rep["trials"]]
    # switched off, or no invocations allowed: no merge is ever scheduled
    for extra in (["--no-merge"], ["--max-merge-invocations", "0"]):
        _, off = gepa("off", *extra)
        assert off["merge"]["attempts"] == 0 and off["merge"]["accepted"] == 0
        assert not any(t["kind"] == "merge" for t in off["trials"])
    assert off["merge"]["max_invocations"] == 0


def test_no_baseline_skips_the_evaluation_of_the_program_as_given(tmp_path):
    """--no-baseline: bootstrap makes |valset| fewer calls (DSPy's BootstrapFewShot makes no
    baseline evaluation either), the report's baseline is null, the result is the same;
    mipro and gepa refuse it before any call."""
    counts, saves = {}, {}
    for name, extra in (("with", []), ("without", ["--no-baseline"])):
        rec = tmp_path / f"{name}.jsonl"
        _, saves[name], rep = optimize(tmp_path, name, "--optimizer", "bootstrap", *extra,
                                       "--sim", f"--record {rec}")
        counts[name] = chat_requests(rec)
        if extra:
            assert rep["baseline"]["score"] is None and rep["best"]["score"] == 71.0
        else:
            assert rep["baseline"]["score"] == 36.0
    assert counts["with"] - counts["without"] == 100
    assert saves["with"].read_bytes() == saves["without"].read_bytes()
    for name in ("mipro", "gepa"):
        rec = tmp_path / f"{name}.jsonl"
        r, _, _ = optimize(tmp_path, name, "--optimizer", name, "--auto", "light",
                           "--no-baseline", "--sim", f"--record {rec}", ok=False)
        assert r.returncode == 2 and "--no-baseline" in r.stderr
        assert chat_requests(rec) == 0


def test_gepa_lookahead_gives_the_same_result_from_the_cache(tmp_path):
    """--lookahead N runs the next N iterations at once as if their children were rejected;
    the real iterations are then answered from the cache: the same program and trials as
    --lookahead 0, far more cache hits, and the report counts the lookahead runs. (The e2e
    suite runs with DSPYC_CACHE=off; these runs turn the memory cache on.)"""
    runs = {}
    for n in (0, 5):
        _, save, rep = optimize(tmp_path, f"l{n}", "--optimizer", "gepa", "--auto", "light",
                                "--seed", "1", "--reflection-model", "reflector",
                                "--lookahead", n, "--cache", "mem")
        runs[n] = (save.read_bytes(), rep)
    # by default it is on with a cache (concurrency / 3) and off without one
    _, _, on = optimize(tmp_path, "d", "--optimizer", "gepa", "--max-metric-calls", "400",
                        "--cache", "mem")
    _, _, off = optimize(tmp_path, "n", "--optimizer", "gepa", "--max-metric-calls", "400",
                         "--cache", "off")
    assert on["lookahead"]["depth"] == 5 and off["lookahead"] == {"depth": 0, "runs": 0}
    (s0, r0), (s5, r5) = runs[0], runs[5]
    assert s0 == s5
    strip = lambda ts: [{k: v for k, v in t.items() if k not in ("elapsed_s", "lm_calls")}
                        for t in ts]
    assert strip(r0["trials"]) == strip(r5["trials"])
    assert r0["lm"]["metric_calls"] == r5["lm"]["metric_calls"]
    assert r0["lookahead"] == {"depth": 0, "runs": 0}
    assert r5["lookahead"]["depth"] == 5 and r5["lookahead"]["runs"] >= 1
    # minibatch trials of the parents, reflections and children came from the cache
    assert r5["lm"]["cache_hits"] >= r0["lm"]["cache_hits"] + 3 * len(
        [t for t in r5["trials"] if t["kind"] == "minibatch"]) // 2
