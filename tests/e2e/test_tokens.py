"""`dspyc tokens`: token ids identical to tiktoken's (PyPI, the oracle) for cl100k_base and
o200k_base, built here from the same rank files (tiktoken cannot download them here) with
the split patterns and special tokens of its own tiktoken_ext/openai_public.py. The texts
cover unicode (CJK, emoji, combining marks, RTL scripts), whitespace runs, numbers,
contractions, code, random mixtures, every code point in several contexts, and inputs over
1 MB; then each flag's effect, chat-message counts and bad input."""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import DSPYC, ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import tiktoken_oracle  # noqa: E402

pytestmark = [pytest.mark.e2e]

RANKS = tiktoken_oracle.RANKS
NAMES = ["cl100k_base", "o200k_base"]

TEXTS = [
    "", "hello world", "Hello, World!", " a", "a ", "  ", "\n",
    "I'm sure you're right, we'll see; they've said it's done and I'd go. He's 'll",
    "I'M SURE YOU'RE RIGHT, WE'LL SEE; THEY'VE SAID IT'S DONE. 'S 'T 'RE 'VE 'M 'LL 'D 'x",
    "it'ſ long s, don'ſ, 'ſ'ſ", "rock'n'roll o'clock ' s '' 's'",
    "1 12 123 1234 12345 3.14159 1,000,000 -42 +7 0x1F 1e10 ١٢٣٤٥ ٣ ½ ¾ Ⅻ ⅷ ² ₃ ①②③ 𝟙𝟚",
    "a  b   c    d\t\te\t \tf", "\n\n\n", " \n \n  \n", "x\r\ny\r\n\r\nz\r", "end   ",
    "   start", "tabs\t\t\tand\x0bvertical\x0cfeed", "a\u00a0b\u2003c\u3000d\u2028e\u2029f\x85g",
    "zero\u200bwidth\u200djoin\ufeffbom\u2060wj",
    'def f(x):\n    return x ** 2  # square\n\nif __name__ == "__main__":\n\tprint(f(3))\n',
    "int main(void) {\n    for (int i = 0; i < 10; i++) { printf(\"%d\\n\", i); }\n}\n",
    '{"key": [1, 2, {"nested": null}], "url": "https://example.com/a/b?c=d&e=f//g"}',
    "path/to/file.txt //comment\n/// doc\n//\n/\n a/b/ /c", "<html><body class=\"x\">hi</body></html>",
    "東京は日本の首都です。中文测试，你好世界！繁體中文測試", "안녕하세요 세계, 한국어 텍스트입니다",
    "こんにちは、カタカナとひらがな。ｶﾀｶﾅ", "👍🏽 👨‍👩‍👧‍👦 🇫🇷🇩🇪 😀😃😄 ❤️ ✨🎉", "🙂🙂🙂🙂🙂🙂🙂🙂",
    "e\u0301 a\u0308\u0304 n\u0303o \u0301start Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "مرحبا بالعالم، هذا نص عربي ١٢٣", "שָׁלוֹם עוֹלָם, זה טקסט בעברית", "نص mixed עם English 123",
    "नमस्ते दुनिया, यह हिंदी है", "สวัสดีชาวโลก ภาษาไทย", "Привет, мир! Ёлка ЁЛКА ёлка",
    "Ελληνικά ΚΕΦΑΛΑΙΑ και μικρά", "ǅungla ǈubljana ǋovi ᾈ ᾙ", "ʰʲʷ ˈstres ˌsecondary",
    "HelloWORLDFooBar camelCaseXMLHttpRequest getHTTPResponseCode iPhone eBay MacOS",
    "ÀÉÎÕÜàéîõü ÇçŒœÆæØøÅå ßẞ ĳĲ ﬁﬂ", "<|endoftext|> hi <|fim_prefix|><|endofprompt|>",
    "\x00\x01\x1f\x7f nul and controls", "!!!???...---***", "a" * 300, "ab" * 200,
    "supercalifragilisticexpialidocious" * 20, "1" * 100, "  " * 50 + "x", "\n" * 40 + "y",
    "...\n\n...\n", "x'\n's\n", " 's", "\t's", "hello\u0301world", "ä\u0308\u0308\u0308x",
    "A\u0300B\u0300c\u0300D", "ΑΒΓαβγ𝐀𝐁𝐂𝐚𝐛𝐜", "\U00010000\U0001F600\U000E0001\U0010FFFD",
    "\ue000\uf8ff private use", "\ufffd replacement", "ﷺ ﷽ ligatures",
]

POOL = (list("abcXYZ019 '\t\n\r/.,!?-_()[]{}<>|\"") +
        ["é", "e\u0301", "\u0301", "東", "京", "한", "👍", "🏽", "\u200d", "ſ", "ǅ", "ʰ",
         "١", "½", "Ⅻ", "ß", "\u00a0", "\u3000", "ا", "ש", "\u05b8", "क", "\u094d", "'s",
         "'LL", "  ", "\r\n", "<|endoftext|>", "//", "123456"])


@pytest.fixture(scope="module")
def oracle():
    return {name: tiktoken_oracle.encoding(name) for name in NAMES}


def run_tokens(*args, input=None):
    args = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run([DSPYC, "tokens", *args], capture_output=True, input=input,
                          timeout=600)


def tokens_of(tmp_path, texts, *args):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    r = run_tokens("--input", path, "--ids", *args)
    assert r.returncode == 0, r.stderr.decode()
    out = [json.loads(l) for l in r.stdout.decode().splitlines()]
    assert [o["index"] for o in out] == list(range(len(texts)))
    for o in out:
        assert o["tokens"] == len(o["ids"])
    return [o["ids"] for o in out]


def assert_same(texts, got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: text {i} {texts[i][:80]!r}: dspyc {g[:40]}, tiktoken {w[:40]}"


def random_texts(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 60))) for _ in range(n)]


@pytest.mark.parametrize("name", NAMES)
def test_ids_match_tiktoken(tmp_path, oracle, name):
    texts = TEXTS + random_texts(400, seed=NAMES.index(name) + 1)
    got = tokens_of(tmp_path, texts, "--encoding", name)
    want = [oracle[name].encode_ordinary(t) for t in texts]
    assert_same(texts, got, want, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_code_point_matches_tiktoken(tmp_path, oracle, name):
    """Each code point alone, after a letter, a space, a digit and an apostrophe, and
    before a lower-case letter: the generated Unicode classes against tiktoken's regex."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    texts = []
    for i in range(0, len(cps), 4096):
        texts.append("".join(f"A{c}b {c}1{c} '{c}x{c}{c}\n" for c in map(chr, cps[i:i + 4096])))
    got = tokens_of(tmp_path, texts, "--encoding", name)
    want = oracle[name].encode_ordinary_batch(texts, num_threads=2)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{name}: code points from U+{cps[i * 4096]:04X} differ"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_long_inputs_match_tiktoken(tmp_path, oracle, name):
    rng = random.Random(7)
    mixed = "".join(rng.choice(TEXTS) + rng.choice([" ", "\n", "", "  "])
                    for _ in range(6000))
    while len(mixed.encode()) < 1 << 20:
        mixed += mixed
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1 << 20))
    # (tiktoken's regex overflows its stack on one megabyte-long run of spaces)
    spaces = "".join(rng.choice([" ", "\t", "\n", "  \n"]) * rng.randint(1, 5000) + "x"
                     for _ in range(800))
    texts = [mixed, word, spaces]
    assert all(len(t.encode()) >= 1 << 20 for t in texts)
    got = tokens_of(tmp_path, texts, "--encoding", name)
    want = [oracle[name].encode_ordinary(t) for t in texts]
    assert_same(texts, got, want, name)


def test_model_picks_the_encoding(oracle):
    text = "Token counts differ: 東京 👍🏽 don't"
    cl = oracle["cl100k_base"].encode_ordinary(text)
    o2 = oracle["o200k_base"].encode_ordinary(text)
    assert cl != o2
    for model, want in [("gpt-4o", o2), ("openai/gpt-4o-mini", o2), ("gpt-4.1-nano", o2),
                        ("gpt-5", o2), ("o1", o2), ("o3-mini", o2), ("gpt-4", cl),
                        ("gpt-4-turbo", cl), ("gpt-3.5-turbo", cl),
                        ("text-embedding-3-small", cl)]:
        r = run_tokens("--model", model, "--ids", text)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["ids"] == want, model
    r = run_tokens("--encoding", "cl100k_base", "--ids", text)
    assert json.loads(r.stdout)["ids"] == cl
    r = run_tokens("--ids", text)  # the default: o200k_base
    assert json.loads(r.stdout)["ids"] == o2
    r = run_tokens("--model", "llama-3-70b", text)
    assert r.returncode == 2 and b"no known encoding" in r.stderr
    r = run_tokens("--encoding", "p50k_base", text)
    assert r.returncode == 2 and b"unknown encoding p50k_base" in r.stderr


def test_ids_flag_and_arguments(oracle):
    r = run_tokens("--encoding", "cl100k_base", "hello world", "a b c")
    assert r.returncode == 0
    assert [json.loads(l) for l in r.stdout.splitlines()] == [
        {"index": 0, "tokens": 2}, {"index": 1, "tokens": 3}]
    r = run_tokens("--encoding", "cl100k_base", "--ids", "hello world")
    assert json.loads(r.stdout) == {"index": 0, "tokens": 2,
                                    "ids": oracle["cl100k_base"].encode_ordinary("hello world")}


@pytest.mark.parametrize("name", NAMES)
def test_special_tokens_only_when_asked(oracle, name):
    text = "a<|endoftext|>b <|endofprompt|> <|fim_prefix|>"
    enc = oracle[name]
    r = run_tokens("--encoding", name, "--ids", text)
    assert json.loads(r.stdout)["ids"] == enc.encode_ordinary(text)
    r = run_tokens("--encoding", name, "--ids", "--special", text)
    ids = json.loads(r.stdout)["ids"]
    assert ids == enc.encode(text, allowed_special="all")
    assert enc.eot_token in ids


def test_ranks_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_tokens("--ranks", empty, "hello")
    assert r.returncode == 2
    assert b"o200k_base.tiktoken" in r.stderr and b"fetch-tiktoken.sh" in r.stderr
    env = dict(os.environ, DSPYC_TIKTOKEN_DIR=str(empty))
    r = subprocess.run([DSPYC, "tokens", "hello"], capture_output=True, env=env)
    assert r.returncode == 2 and str(empty).encode() in r.stderr
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(os.path.join(RANKS, "o200k_base.tiktoken"), copy)
    r = subprocess.run([DSPYC, "tokens", "--ranks", copy, "hello"], capture_output=True, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["tokens"] == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (copy / "o200k_base.tiktoken").read_bytes().splitlines(keepends=True)
    (bad / "o200k_base.tiktoken").write_bytes(b"".join(lines[:5] + [b"not-base64! 5\n"]))
    r = run_tokens("--ranks", bad, "hello")
    assert r.returncode == 2 and b"line 6" in r.stderr and b"base64" in r.stderr


def test_messages_count_as_openai_counts(tmp_path, oracle):
    """The OpenAI cookbook's num_tokens_from_messages: 3 per message, the tokens of each
    value, 1 more for a name, 3 priming the reply."""
    convs = [
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "What is 2+2? 東京"}],
        [{"role": "user", "name": "example_user", "content": "New synergies"},
         {"role": "assistant", "content": ""}],
        [],
    ]
    for name, model in [("cl100k_base", "gpt-4"), ("o200k_base", "gpt-4o")]:
        enc = oracle[name]
        path = tmp_path / "m.jsonl"
        path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
        r = run_tokens("--model", model, "--input", path)
        assert r.returncode == 0, r.stderr
        got = [json.loads(l)["tokens"] for l in r.stdout.splitlines()]
        want = [3 + sum(3 + sum(len(enc.encode_ordinary(v)) for v in m.values()) +
                        ("name" in m) for m in c) for c in convs]
        assert got == want


def test_bad_input_gets_an_error_record(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n{"text": 5}\n{"other": 1}\n\n'
                    '{"text": "' + "x" * 100 + '"}\n{"messages": [1]}\n{"text": "end"}\n')
    r = run_tokens("--input", path, "--max-line-bytes", 64)
    assert r.returncode == 1
    out = [json.loads(l) for l in r.stdout.splitlines()]
    assert [o["index"] for o in out] == list(range(7))
    assert out[0]["tokens"] == 1 and out[6]["tokens"] == 1
    assert out[1]["line"] == 2 and out[1]["error"]["class"] == "parse"
    assert out[2]["error"]["class"] == "invalid" and "string" in out[2]["error"]["message"]
    assert "no \"text\"" in out[3]["error"]["message"]
    assert out[4]["line"] == 6 and out[4]["error"]["class"] == "too_big"
    assert out[5]["line"] == 7 and "messages[0]" in out[5]["error"]["message"]
    r = run_tokens(b"ok", b"bad \xff\xfe utf-8")
    assert r.returncode == 1
    out = [json.loads(l) for l in r.stdout.splitlines()]
    assert out[0]["tokens"] == 1
    assert out[1]["error"]["class"] == "utf8" and "byte 4" in out[1]["error"]["message"]
    r = run_tokens()
    assert r.returncode == 2 and b"neither" in r.stderr
    r = run_tokens("--help")
    assert r.returncode == 0
    for flag in [b"--encoding", b"--model", b"--ids", b"--special", b"--input", b"--ranks",
                 b"--max-line-bytes"]:
        assert flag in r.stdout
