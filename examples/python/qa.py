"""A Python DSPy program for `dspyc bench --python examples.python.qa:qa` (run from the
repository root). It talks to the endpoint dspyc bench names in the environment."""
import os

import dspy

lm = dspy.LM(os.environ.get("DSPYC_BENCH_MODEL", "openai/dspyc-sim"),
             api_base=os.environ.get("DSPYC_BENCH_BASE_URL", "http://127.0.0.1:8089/v1"),
             api_key=os.environ.get("OPENAI_API_KEY", "sim"), cache=False)
dspy.configure(lm=lm)
qa = dspy.Predict("question -> answer")
