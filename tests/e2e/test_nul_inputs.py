"""A "\\u0000" escape in an input line is a valid JSON string, as DSPy takes it: `dspyc run`
accepts it and carries the NUL into the prompt byte for byte (strings travel with their
lengths, not as C strings), and the simulator reads such a request."""
import json
import subprocess

from conftest import DSPYC


def test_nul_escape_reaches_the_prompt(sim, tmp_path):
    rec = tmp_path / "rec.jsonl"
    _, base = sim("--record", rec)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"question": "a\u0000b", "context": ["x\u0000y"]}) + "\n")
    r = subprocess.run([DSPYC, "run", "--signature", "question, context -> answer",
                        "--input", inp, "--output", out, "--base-url", base,
                        "--model", "openai/dspyc-sim"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["ok"] is True, record
    (req,) = [json.loads(line) for line in rec.read_text().splitlines()]
    user = req["body"]["messages"][-1]["content"]
    assert "[[ ## question ## ]]\na\x00b\n" in user
    assert "\u00abx\x00y\u00bb" in user
