"""A Python DSPy program for `dspyc bench --python examples.python.qa:qa` (run from the
repository root). It talks to the endpoint dspyc bench names in the environment."""
import os

import dspy


def base_url():
    """The endpoint: whole from the private file dspyc names when the URL has credentials
    (the environment holds it masked), else from the environment."""
    path = os.environ.get("DSPYC_BENCH_BASE_URL_FILE")
    if path:
        with open(path) as f:
            return f.read().strip()
    return os.environ.get("DSPYC_BENCH_BASE_URL", "http://127.0.0.1:8089/v1")


lm = dspy.LM(os.environ.get("DSPYC_BENCH_MODEL", "openai/dspyc-sim"), api_base=base_url(),
             api_key=os.environ.get("OPENAI_API_KEY", "sim"), cache=False)
dspy.configure(lm=lm)
qa = dspy.Predict("question -> answer")
