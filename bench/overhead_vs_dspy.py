"""Framework overhead per module call, dspyc against Python DSPy in the same run.

Both sides get the same signature, demos and canned LM response, with caching off: what is
left is the framework's own work (prompt rendering, request building, response parsing,
bookkeeping). dspyc answers through its in-process transport hook. DSPy is measured one
of two ways, and the output says which:

- "litellm-patch" (DSPy up to 3.3, whose LM calls litellm.completion): litellm.completion
  is replaced by a function that builds the provider response object from the canned JSON,
  as litellm would after reading it from the wire. No network.
- "loopback" (DSPy 3.4 and later, whose OpenAI transport no longer calls litellm): DSPy's
  own HTTP transport against a canned server on loopback (bench/canned_server.py, its own
  process). The figure then includes one loopback HTTP exchange; the bare exchange from
  Python (http.client, keep-alive) is measured in the same run and printed beside it.

usage: python bench/overhead_vs_dspy.py [--build build] [--iterations N] [--dspy-iterations N]
                                        [--peer-transport auto|litellm-patch|loopback]
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


def start_canned(body):
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "canned_server.py"), body],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError("the canned server did not start")
    return proc, line.split()[-1]


def bare_exchange_us(base_url, iterations):
    """One keep-alive POST and its answer from Python, without any framework."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    payload = json.dumps({"model": "canned", "messages": [{"role": "user", "content": "hi"}]})
    for i in range(iterations + 50):
        if i == 50:
            t0 = time.perf_counter()
        conn.request("POST", u.path + "/chat/completions", payload,
                     {"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()
    return (time.perf_counter() - t0) / iterations * 1e6


def measure_dspy(iterations, transport):
    # Offline, LiteLLM would first try (and retry) to download its model price list.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    if transport == "auto":
        major, minor = (int(x) for x in dspy.__version__.split(".")[:2])
        transport = "loopback" if (major, minor) >= (3, 4) else "litellm-patch"
    results, servers, floor = {}, [], None
    for name, kind, ndemos in SCENARIOS:
        body = response_body(CANNED[kind])
        if transport == "litellm-patch":
            import litellm

            def fake_completion(*args, _body=body, **kwargs):
                return litellm.ModelResponse(**json.loads(_body))

            litellm.completion = fake_completion
            lm = dspy.LM("openai/canned", cache=False)
        else:
            proc, base = start_canned(body)
            servers.append(proc)
            if floor is None:
                floor = bare_exchange_us(base, max(iterations, 200))
            lm = dspy.LM("openai/canned", api_base=base, api_key="canned", cache=False)
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
    for proc in servers:
        proc.kill()
        proc.wait()
    return results, dspy.__version__, transport, floor


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.environ.get("DSPYC_BUILD", "build"))
    ap.add_argument("--iterations", type=int, default=200000, help="dspyc calls per scenario")
    ap.add_argument("--dspy-iterations", type=int, default=2000, help="DSPy calls per scenario")
    ap.add_argument("--peer-transport", choices=["auto", "litellm-patch", "loopback"],
                    default="auto", help="how DSPy gets its canned answers (default: "
                    "litellm-patch before DSPy 3.4, loopback from 3.4 on)")
    args = ap.parse_args()

    out = subprocess.run([os.path.join(args.build, "bench_overhead"), "--json",
                          "--iterations", str(args.iterations)],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    theirs, version, transport, floor = measure_dspy(args.dspy_iterations, args.peer_transport)

    print(f"framework overhead per call (canned LM, no cache): dspyc vs DSPy {version}")
    print("  dspyc: in-process transport hook, no network")
    if transport == "litellm-patch":
        print(f"  DSPy {version}: litellm.completion replaced by the canned response, no network")
    else:
        print(f"  DSPy {version}: its own HTTP transport against a canned loopback server; "
              f"the bare keep-alive exchange from Python takes {floor:.1f} us of each figure")
    print(f"  {'scenario':<18} {'dspyc us':>10} {'DSPy us':>10} {'DSPy/dspyc':>11}")
    for name, _, _ in SCENARIOS:
        a, b = ours[name + "_us"], theirs[name]
        print(f"  {name:<18} {a:>10.3f} {b:>10.1f} {b / a:>10.0f}x")
    print("  target: <= 1 us per Predict call with 0 demos "
          "(published: DSRs 2.2 us, DSPy 3.2 239 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
