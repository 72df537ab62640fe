"""Framework overhead per module call, dspyc against Python DSPy in the same run.

Both sides get the same signature, demos and canned LM response, with caching off and no
network: what is left is the framework's own work (prompt rendering, request building,
response parsing, bookkeeping). DSPy runs its real LM client with litellm.completion
replaced by a function that builds the provider response object from the canned JSON, as
litellm would after reading it from the wire.

usage: python bench/overhead_vs_dspy.py [--build build] [--iterations N] [--dspy-iterations N]
"""
import argparse
import json
import os
import subprocess
import sys
import time

CANNED = {
    "predict": "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]",
    "cot": "[[ ## reasoning ## ]]\nThe capital of France is Paris.\n\n[[ ## answer ## ]]\nParis"
           "\n\n[[ ## completed ## ]]",
}
SCENARIOS = [("predict_0_demos", "predict", 0), ("predict_4_demos", "predict", 4),
             ("cot_0_demos", "cot", 0)]


def response_body(content):
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "sim",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    })


def measure_dspy(iterations):
    # Offline, LiteLLM would first try (and retry) to download its model price list.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy
    import litellm

    results = {}
    for name, kind, ndemos in SCENARIOS:
        body = response_body(CANNED[kind])

        def fake_completion(*args, **kwargs):
            return litellm.ModelResponse(**json.loads(body))

        litellm.completion = fake_completion
        lm = dspy.LM("openai/canned", cache=False)
        dspy.configure(lm=lm)
        module = dspy.Predict("question -> answer") if kind == "predict" else \
            dspy.ChainOfThought("question -> answer")
        demos = [dspy.Example(question=f"What is {i} + {i + 1}?", answer=str(2 * i + 1))
                 for i in range(ndemos)]
        for p in module.predictors():
            p.demos = demos
        q = "What is the capital of France?"
        for _ in range(50):
            module(question=q)
        t0 = time.perf_counter()
        for _ in range(iterations):
            module(question=q)
        results[name] = (time.perf_counter() - t0) / iterations * 1e6
    return results, dspy.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.environ.get("DSPYC_BUILD", "build"))
    ap.add_argument("--iterations", type=int, default=200000, help="dspyc calls per scenario")
    ap.add_argument("--dspy-iterations", type=int, default=2000, help="DSPy calls per scenario")
    args = ap.parse_args()

    out = subprocess.run([os.path.join(args.build, "bench_overhead"), "--json",
                          "--iterations", str(args.iterations)],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    theirs, version = measure_dspy(args.dspy_iterations)

    print(f"framework overhead per call (canned LM, no cache): dspyc vs DSPy {version}")
    print(f"  {'scenario':<18} {'dspyc us':>10} {'DSPy us':>10} {'DSPy/dspyc':>11}")
    for name, _, _ in SCENARIOS:
        a, b = ours[name + "_us"], theirs[name]
        print(f"  {name:<18} {a:>10.3f} {b:>10.1f} {b / a:>10.0f}x")
    print("  target: <= 1 us per Predict call with 0 demos "
          "(published: DSRs 2.2 us, DSPy 3.2 239 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
