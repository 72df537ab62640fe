"""Optimizer benchmark, dspyc against Python DSPy in the same run.

On examples/arith (Predict `question -> answer`, exact match on `answer`, train 50 / dev 100)
against `dspyc sim` at 0 ms and at 100 ms per call, with the same seed, budget and concurrency
on both sides: DSPy's BootstrapFewShot, MIPROv2(auto="light") and GEPA(auto="light", the
simulator as reflection LM, feedback "Correct/Wrong: the expected answer is N") vs `dspyc
optimize --optimizer bootstrap|mipro|gepa`. For GEPA a "trial" is a candidate in its pool. Both sides cache in memory only. For each: the dev score of the
optimized program, wall time, the ratio of the wall times, LM requests the simulator received
per trial, and framework CPU per trial (the optimizer process's CPU time; the simulator runs in
its own process on both sides). DSPy's wall time covers compile() and one Evaluate of the
result on dev (imports and a first call are made before the clock starts); dspyc's is the
whole command, process start included. The work is DSPy's: dspyc's bootstrap runs with
--no-baseline (DSPy's BootstrapFewShot evaluates no baseline; MIPROv2 and GEPA evaluate
theirs on both sides). The peer is the DSPy the running Python imports (make run uses
.venv-dspy34, DSPy 3.4.1); its version is printed.
Fixed output format; not a pass/fail test.

usage: python bench/optimize_vs_dspy.py [--build build] [--latencies 0,100]
                                        [--optimizers bootstrap,mipro,gepa] [--threads 16]
"""
import argparse
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARITH = os.path.join(ROOT, "examples", "arith")
LISTENING = re.compile(r"listening on (http://\S+/v1)")


def start_sim(dspyc, *args):
    proc = subprocess.Popen([dspyc, "sim", "--port", "0", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = LISTENING.search(line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("dspyc sim did not start")


def requests(url):
    with urllib.request.urlopen(url.replace("/v1", "/admin/stats")) as r:
        return json.load(r)["requests"]


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class quiet_stderr:
    """DSPy's progress bars and LiteLLM's teardown noise go to /dev/null."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])


def run_dspy(name, url, threads, seed):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy
    from dspy.teleprompt import GEPA, BootstrapFewShot, MIPROv2

    logging.getLogger("dspy").setLevel(logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    lm = dspy.LM("openai/dspyc-sim", api_base=url, api_key="sim", cache=True)
    dspy.configure(lm=lm)
    train = [dspy.Example(**x).with_inputs("question") for x in load(f"{ARITH}/train.jsonl")]
    dev = [dspy.Example(**x).with_inputs("question") for x in load(f"{ARITH}/dev.jsonl")]

    def metric(example, pred, trace=None):
        return dspy.evaluate.answer_exact_match(example, pred)

    student = dspy.Predict("question -> answer")
    student(question="Warm-up: what is 1 + 1?")  # imports and the first connection, untimed
    r0, c0, t0 = requests(url), time.process_time(), time.perf_counter()
    if name == "bootstrap":
        opt = BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=16)
        best = opt.compile(student, trainset=train)
        trials = 1
    elif name == "mipro":
        opt = MIPROv2(metric=metric, auto="light", num_threads=threads, seed=seed,
                      verbose=False)
        best = opt.compile(student, trainset=train, valset=dev)
        trials = len(getattr(best, "trial_logs", {})) or 1
    else:
        def feedback_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
            ok = dspy.evaluate.answer_exact_match(gold, pred)
            return dspy.Prediction(score=float(ok), feedback=(
                f"Correct: the answer is {gold.answer}." if ok else
                f"Wrong: the expected answer is {gold.answer}."))

        reflection = dspy.LM("openai/dspyc-sim", api_base=url, api_key="sim", cache=True,
                             temperature=1.0)
        opt = GEPA(metric=feedback_metric, auto="light", num_threads=threads, seed=seed,
                   reflection_lm=reflection, track_stats=True)
        best = opt.compile(student, trainset=train, valset=dev)
        # GEPA's "trials" on both sides: the candidates in its pool (the seed included)
        trials = max(1, len(getattr(getattr(best, "detailed_results", None), "candidates",
                                    [])) or 1)
    score = dspy.Evaluate(devset=dev, metric=metric, num_threads=threads,
                          display_progress=False)(best)
    score = score.score if hasattr(score, "score") else score
    wall = time.perf_counter() - t0
    return {"score": float(score), "wall_s": wall, "trials": trials,
            "calls": requests(url) - r0, "cpu_s": time.process_time() - c0}


def run_dspyc(dspyc, name, url, threads, seed):
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "r.json")
        r0 = requests(url)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        extra = {"gepa": ["--auto", "light"], "bootstrap": ["--no-baseline"]}.get(name, [])
        subprocess.run([dspyc, "optimize", *extra, "--signature", "question -> answer",
                        "--optimizer", name, "--trainset", f"{ARITH}/train.jsonl", "--valset",
                        f"{ARITH}/dev.jsonl", "--metric", "exact_match:answer", "--save",
                        os.path.join(tmp, "s.json"), "--report", report, "--seed", str(seed),
                        "--concurrency", str(threads), "--cache", "mem", "-q",
                        "--base-url", url, "--model", "openai/dspyc-sim"], check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        rep = json.load(open(report))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    trials = len(rep["trials"])
    if name == "gepa":
        trials = 1 + sum(t["kind"] == "full" for t in rep["trials"])
    return {"score": rep["best"]["score"], "wall_s": wall, "trials": trials,
            "calls": requests(url) - r0, "cpu_s": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--latencies", default="0,100")
    ap.add_argument("--optimizers", default="bootstrap,mipro,gepa")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    dspyc = os.path.join(ROOT, a.build, "dspyc")
    import dspy
    print(f"DSPy {dspy.__version__} vs dspyc; examples/arith, Predict question -> answer, exact match; concurrency {a.threads}, "
          f"seed {a.seed}; memory caches on both sides")
    print(f"{'optimizer':<10} {'ms/call':>7} {'side':<6} {'score':>6} {'wall s':>8} "
          f"{'trials':>6} {'LM req/trial':>12} {'CPU ms/trial':>12} {'wall ratio':>10}")
    for lat in [int(x) for x in a.latencies.split(",")]:
        sims = {}
        for side in ("dspy", "dspyc"):  # a fresh simulator each, same seed: same answers
            sims[side] = start_sim(dspyc, "--latency-ms", str(lat), "--capacity", "0")
        try:
            for name in a.optimizers.split(","):
                with quiet_stderr():
                    d = run_dspy(name, sims["dspy"][1], a.threads, a.seed)
                c = run_dspyc(dspyc, name, sims["dspyc"][1], a.threads, a.seed)
                for side, r in (("DSPy", d), ("dspyc", c)):
                    ratio = f"{d['wall_s'] / c['wall_s']:.1f}x" if side == "dspyc" else ""
                    print(f"{name:<10} {lat:>7} {side:<6} {r['score']:>6.1f} {r['wall_s']:>8.2f} "
                          f"{r['trials']:>6} {r['calls'] / r['trials']:>12.1f} "
                          f"{1e3 * r['cpu_s'] / r['trials']:>12.1f} {ratio:>10}")
                sys.stdout.flush()
        finally:
            for proc, _ in sims.values():
                proc.terminate()
                proc.wait()
    print("score: dev exact match (percent) of the optimized program; wall ratio: DSPy's wall "
          "time / dspyc's")


if __name__ == "__main__":
    main()
