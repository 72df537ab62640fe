"""Every flag that any `dspyc <command> --help` documents must be named by some test file
under tests/: a new flag cannot arrive untested. The commands are read from `dspyc --help`,
so a new subcommand is covered as soon as it is listed there. A flag counts as named when
its exact spelling (`--max-tokens`, or `-q` as a word) appears in a test file other than
this one; the simulator's `--sim-NAME` aliases count as their `--NAME`."""
import os
import re
import subprocess

import pytest

from conftest import DSPYC, ROOT

pytestmark = [pytest.mark.e2e]

TESTS = os.path.join(ROOT, "tests")
SELF = os.path.abspath(__file__)
# Flags every command has, checked by test_cli's help test.
UNIVERSAL = {"--help", "-h", "--version"}
FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


def help_text(*args):
    r = subprocess.run([DSPYC, *args, "--help"], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def commands():
    text = help_text()
    block = text.split("commands:", 1)[1]
    cmds = []
    for line in block.splitlines():
        m = re.match(r"^\s{2}([a-z][a-z0-9-]*)\s+\S", line)
        if m:
            cmds.append(m.group(1))
        elif cmds and not line.strip():
            break
    return cmds


def documented_flags(cmd):
    """Flags named in the option columns of `dspyc CMD --help` (left of the description),
    plus those the usage lines name."""
    flags = set()
    for line in help_text(cmd).splitlines():
        stripped = line.strip()
        if stripped.startswith("usage:") or line.startswith(" " * 7):
            # usage lines and their continuations
            flags.update(FLAG.findall(line))
        if re.match(r"^\s{1,4}-", line):
            # "  --flag ARG    description": the flag column, up to a 2-space gap,
            # including "--a / --b" and "--a N, --b N" forms
            col = re.split(r"\s{2,}", stripped, maxsplit=1)[0]
            flags.update(FLAG.findall(col))
    return flags - UNIVERSAL


def _test_files():
    out = []
    for d, _, files in os.walk(TESTS):
        if "corpus" in d or "__pycache__" in d:
            continue
        for f in files:
            p = os.path.join(d, f)
            if os.path.abspath(p) != SELF and f.endswith((".py", ".c", ".sh", ".h")):
                out.append(p)
    return out


def named_flags():
    names = set()
    for p in _test_files():
        with open(p, errors="replace") as f:
            text = f.read()
        for flag in FLAG.findall(text):
            names.add(flag)
            if flag.startswith("--sim-"):
                names.add("--" + flag[len("--sim-"):])
    return names


def test_commands_are_discovered():
    cmds = commands()
    assert {"predict", "run", "sim", "cache", "bench", "loadtest"} <= set(cmds), cmds


def test_every_documented_flag_is_named_by_a_test():
    named = named_flags()
    missing = {}
    for cmd in commands():
        for flag in sorted(documented_flags(cmd)):
            if flag not in named:
                missing.setdefault(cmd, []).append(flag)
    assert not missing, ("flags documented in --help that no test under tests/ names: " +
                         "; ".join(f"dspyc {c}: {' '.join(f)}" for c, f in missing.items()))


def test_the_check_sees_a_flag_no_test_names(tmp_path):
    # Self-test of the parser: a made-up help line is read as a flag, and a name no test
    # file uses is reported missing.
    line = "  --frobnicate-the-widget N   made up"
    col = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
    assert FLAG.findall(col) == ["--frobnicate-the-widget"]
    assert "--frobnicate-the-widget" not in named_flags()
    assert "--max-tokens" in documented_flags("run")
    assert "-q" in documented_flags("run")
