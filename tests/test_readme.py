"""The README is code: its Python block runs, and gives what its three commands give, bit for bit.

The block and the commands are read from README.md itself, so an edit there that breaks them fails here.
(About 3 minutes on 2 CPU cores: the block distills once and the command line distills once, from the same
teacher settings.)
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(heading: str, lang: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no {lang} block under {heading!r}"
    return m.group(1)


def test_readme_starts_with_the_two_commands_that_ci_runs():
    lines = README.read_text().split("\n")
    fence = lines.index("```bash")
    first, second = lines[fence + 1], lines[fence + 2]
    assert first.endswith("&& .venv/bin/lsdd demo") and second.endswith("&& .venv/bin/pytest -q")
    ci = (README.parent / ".ci" / "run").read_text()
    # CI runs the second command's steps: the pinned torch, the dev extras, the same pytest
    for part in ("pip install -q torch==2.13.0", 'pip install -q -e ".[dev]"', ".venv/bin/pytest -q"):
        assert part in ci, part


def test_readme_python_block_gives_the_cli_samples_bit_for_bit(tmp_path, monkeypatch):
    from lsdd.cli import main
    from lsdd.sampling.sampler import Sampler

    py_dir, cli_dir = tmp_path / "py", tmp_path / "cli"
    py_dir.mkdir()
    cli_dir.mkdir()
    monkeypatch.chdir(py_dir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_block("## Quick start (Python)", "python"), "README.md", "exec"), {})
    printed = out.getvalue()
    assert "validation at 8 NFE" in printed and "violation_rate" in printed

    monkeypatch.chdir(cli_dir)
    commands = [line.split("#")[0].strip() for line in _block("## Quick start (command line)", "bash").split("\n")]
    commands = [c for c in commands if c]
    assert [c.split()[:2] for c in commands] == [["lsdd", "distill"], ["lsdd", "sample"], ["lsdd", "eval"]]
    for c in commands:
        assert main(shlex.split(c)[1:]) == 0, c
    assert main(["eval", "x.npy", "--json", "metrics.json"]) == 0

    # the same sampler whatever the entry point (timings in the provenance aside) ...
    a, b = Sampler.load(py_dir / "sampler8.json"), Sampler.load(cli_dir / "sampler8.json")
    for field in ("times", "rule", "coeffs", "movers", "phi_mode", "conditioning", "temperature", "model"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.provenance["validation"] == b.provenance["validation"]
    # ... validated, and learned (on countdown validation accepts LSD: if that changes, the README must say so)
    assert a.learned and a.coeffs is not None and a.coeffs != (1.0,) * 8
    # the same samples, bit for bit, and the same provenance but for where they came from
    x_py, x_cli = np.load(py_dir / "x.npy"), np.load(cli_dir / "x.npy")
    assert x_py.dtype == np.int64 and x_py.shape == (256, 64) and np.array_equal(x_py, x_cli)
    side_py = json.loads((py_dir / "x.npy.json").read_text())
    side_cli = json.loads((cli_dir / "x.npy.json").read_text())
    side_cli.pop("sampler_file")
    assert side_py.keys() == side_cli.keys() and side_py["nfe"] == 8 and side_py["seed"] == 0
    assert Sampler.from_dict(side_py["sampler"]).coeffs == Sampler.from_dict(side_cli["sampler"]).coeffs
    # and `lsdd.evaluate` prints what `lsdd eval` writes
    metrics = json.loads((cli_dir / "metrics.json").read_text())["metrics"]
    import lsdd

    got = lsdd.evaluate(np.load(py_dir / "x.npy"), lsdd.load_model("countdown"))
    assert {k: (v if v == v else None) for k, v in got.items()} == pytest.approx(metrics)


def test_readme_prompt_commands_continue_the_prompt(tmp_path, monkeypatch, capsys):
    """The README's prompt block runs as written: every sample starts with the prompt's tokens, decode --json shows
    the prompt and the continuation apart, and eval scores the continuation given its prompt."""
    from lsdd.cli import main

    monkeypatch.chdir(tmp_path)
    commands = [line.split("#")[0].strip() for line in
                _block("## Prompts, infilling and any masked LM", "bash").split("\n")]
    commands = [c for c in commands if c]
    assert [c.split()[:2] for c in commands] == [["lsdd", "sample"], ["lsdd", "decode"], ["lsdd", "eval"]]
    outs = []
    for c in commands:
        assert main(shlex.split(c)[1:]) == 0, c
        outs.append(capsys.readouterr().out)
    prompt = shlex.split(commands[0])[shlex.split(commands[0]).index("--prompt") + 1]
    rows = [json.loads(line) for line in outs[1].splitlines()]
    assert len(rows) == 2 and all(r["prompt"] == prompt and r["text"] for r in rows)
    x = np.load(tmp_path / "c.npy")
    from lsdd import load_model

    ids = load_model("text-absorb").tokenizer.encode(prompt)
    assert (x[:, : len(ids)] == np.asarray(ids)).all()
    assert "scored on their continuation given the prompt" in outs[2] and "gen_ppl" in outs[2]
