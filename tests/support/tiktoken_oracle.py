"""tiktoken (PyPI) as the oracle and peer of dspyc's BPE token counts: an Encoding built from
the rank files dspyc reads (tiktoken cannot download them here), with the split pattern and
special tokens of tiktoken's own tiktoken_ext/openai_public.py for that name."""
import base64
import os
from unittest import mock

import tiktoken
from tiktoken_ext import openai_public

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANKS = os.environ.get("DSPYC_TIKTOKEN_DIR") or os.path.join(ROOT, "models", "tiktoken")


def load_ranks(name, ranks_dir=RANKS):
    ranks = {}
    with open(os.path.join(ranks_dir, name + ".tiktoken"), "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def encoding(name, ranks_dir=RANKS):
    ranks = load_ranks(name, ranks_dir)
    with mock.patch.object(openai_public, "load_tiktoken_bpe", lambda *a, **k: ranks):
        spec = getattr(openai_public, name)()
    return tiktoken.Encoding(name=spec["name"], pat_str=spec["pat_str"],
                             mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"])
