"""Conditional generation end to end: ``lsdd.sample(prompt=, infill=, fixed=)`` and ``lsdd sample --prompt,
--prompt-file, --infill, --fixed, --block``; one-line errors with exit code 2 before any sampling; the sidecar's
record of the condition, ``lsdd decode`` (prompt and text apart, --json) and ``lsdd eval --task text`` (the
continuation scored given its prompt)."""

import json
import math

import numpy as np
import pytest
import torch

import lsdd
from lsdd.cli import main
from lsdd.errors import UserError
from lsdd.sampling.prompts import Condition, parse_template
from lsdd.sampling.sampler import Sampler
from test_text import corpus, text_model  # noqa: F401  (fixtures: a tiny char-level text model)


@pytest.fixture(scope="module")
def text():
    return lsdd.load_model("text-absorb")


@pytest.fixture(scope="module")
def countdown():
    return lsdd.load_model("countdown")


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors (also exit code 2, one line)
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- the Python face --------------------------------------------------------------------------------------------
def test_text_prompt_is_kept_and_recorded(text):
    """Every sample starts with the prompt's tokens; the sidecar records the condition; Samples.fixed marks them."""
    ids = text.tokenizer.encode("ROMEO:")
    out = lsdd.sample(text, Sampler.spread(4), 3, seed=1, prompt="ROMEO:")
    assert (out.x[:, : len(ids)] == torch.from_numpy(ids)).all() and out.nfe == 4
    assert out.fixed.shape == out.x.shape and out.fixed[:, : len(ids)].all() and not out.fixed[:, len(ids):].any()
    cond = Condition.from_info(out.info["condition"])
    assert cond.kind == "prompt" and cond.texts == ("ROMEO:",) and torch.equal(cond.held(3), out.fixed)
    assert json.loads(json.dumps(out.info)) == out.info  # the sidecar is JSON


def test_prompts_cycle_and_token_ids_work_on_any_model(countdown):
    """Sample i continues prompt i mod P, for texts and for token ids (a list, a list of lists, a 2-D array);
    fixed= takes a (P, L) array with the mask id at the free positions."""
    smp = Sampler.euler(4)
    a = lsdd.sample(countdown, smp, 5, seed=0, prompt=[[3, 2, 1], [7]])
    assert (a.x[0::2, :3] == torch.tensor([3, 2, 1])).all() and (a.x[1::2, 0] == 7).all()
    b = lsdd.sample(countdown, smp, 5, seed=0, prompt=np.array([[3, 2, 1]]))
    assert (b.x[:, :3] == torch.tensor([3, 2, 1])).all()
    given = np.full((2, countdown.length), countdown.graph.num_tokens)
    given[0, 10], given[1, [0, 63]] = 5, [1, 2]
    c = lsdd.sample(countdown, smp, 4, seed=0, fixed=given)
    assert (c.x[0::2, 10] == 5).all() and (c.x[1::2, 0] == 1).all() and (c.x[1::2, 63] == 2).all()
    # the same condition given as token ids or as the equivalent fixed array: the same samples, bit for bit
    row = np.full(countdown.length, countdown.graph.num_tokens)
    row[:3] = [3, 2, 1]
    assert torch.equal(lsdd.sample(countdown, smp, 5, seed=0, fixed=row).x, b.x)


@pytest.mark.parametrize("kwargs,says", [
    ({"prompt": "hi"}, "has no tokenizer"),
    ({"prompt": [1] * 64}, "is 64 tokens long, but the model's sequences are 64"),
    ({"prompt": [1, 40]}, "token id 40 is outside the model's vocabulary of 32"),
    ({"fixed": np.zeros((2, 64), dtype=int)}, "row 0 has no free position"),
    ({"fixed": np.zeros(10, dtype=int)}, "rows of 10 tokens"),
    ({"fixed": np.full(64, 33)}, "token id 33 is outside"),
    ({"prompt": [1], "fixed": np.full(64, 32)}, "not prompt and fixed"),
    ({"prompt": {"a": 1}}, "a prompt is a string"),
])
def test_bad_conditions_are_one_line_user_errors(countdown, kwargs, says):
    with pytest.raises(UserError, match=says) as e:
        lsdd.sample(countdown, Sampler.euler(2), 2, **kwargs)
    assert "\n" not in str(e.value)


def test_infill_template_pieces(text):
    """{{n}} marks n free tokens; each literal piece is encoded on its own; the rest of the sequence is free."""
    assert parse_template("To be{{3}}or not{{2}}") == ["To be", 3, "or not", 2]
    out = lsdd.sample(text, Sampler.spread(4), 2, seed=0, infill="To be{{3}}or not{{2}}")
    a, b = text.tokenizer.encode("To be"), text.tokenizer.encode("or not")
    i = len(a) + 3
    assert (out.x[:, : len(a)] == torch.from_numpy(a)).all() and (out.x[:, i:i + len(b)] == torch.from_numpy(b)).all()
    assert out.fixed[0].tolist() == [True] * len(a) + [False] * 3 + [True] * len(b) + [False] * (128 - i - len(b))
    for bad, says in (("no gap here", "has no gap"), ("x{{0}}", "needs n >= 1"), ("{{200}}", "more than the model's")):
        with pytest.raises(UserError, match=says):
            lsdd.sample(text, Sampler.spread(4), 1, infill=bad)


# ---- the command line -------------------------------------------------------------------------------------------
def test_cli_prompt_equals_python_and_decodes_apart(text, tmp_path, capsys):
    x = tmp_path / "x.npy"
    rc, out, _ = _run(["sample", "--model", "text-absorb", "--spread", "--nfe", "4", "--prompt", "ROMEO:", "--num",
                       "3", "--seed", "2", "--out", str(x)], capsys)
    assert rc == 0 and "continuing 'ROMEO:'" in out
    want = lsdd.sample(text, Sampler.spread(4), 3, seed=2, prompt="ROMEO:")
    assert np.array_equal(np.load(x), want.x.numpy())
    rc, out, _ = _run(["decode", "--model", "text-absorb", str(x), "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    n = len(text.tokenizer.encode("ROMEO:"))
    assert rc == 0 and [r["prompt"] for r in rows] == ["ROMEO:"] * 3 and set(rows[0]) == {"prompt", "text"}
    assert rows[1]["text"] == text.tokenizer.decode(want.x[1, n:])
    rc, out, _ = _run(["decode", "--model", "text-absorb", str(x), "--num", "1"], capsys)
    assert out.startswith("=== sample 0 ===\n--- prompt ---\nROMEO:\n--- text ---\n")
    rc, out, _ = _run(["decode", "--model", "text-absorb", str(x), "--num", "1", "--plain"], capsys)
    assert out.startswith("ROMEO:") and "---" not in out.splitlines()[0]
    # without --model: the model named in x.npy.json; a bare array without a sidecar needs --model
    rc, out2, _ = _run(["decode", str(x), "--num", "1", "--plain"], capsys)
    assert rc == 0 and out2 == out
    bare = tmp_path / "bare.npy"
    np.save(bare, np.load(x))
    rc, _, err = _run(["decode", str(bare)], capsys)
    assert rc == 2 and "pass --model" in err and len(err.strip().splitlines()) == 1


def test_cli_prompt_file_and_fixed_file(text, countdown, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("ROMEO:\n\nJULIET:\n")  # the blank line is skipped
    x = tmp_path / "x.npy"
    rc, out, _ = _run(["sample", "--model", "text-absorb", "--nfe", "2", "--prompt-file", str(prompts),
                       "--num-samples", "5", "--out", str(x)], capsys)
    assert rc == 0 and "continuing 2 prompts" in out
    rc, out, _ = _run(["decode", "--model", "text-absorb", str(x), "--json"], capsys)
    assert [json.loads(line)["prompt"] for line in out.splitlines()] == ["ROMEO:", "JULIET:"] * 2 + ["ROMEO:"]
    given = np.full(countdown.length, countdown.graph.num_tokens)
    given[5:8] = [9, 8, 7]
    np.save(tmp_path / "g.npy", given)
    y = tmp_path / "y.npy"
    rc, out, _ = _run(["sample", "--model", "countdown", "--nfe", "4", "--fixed", str(tmp_path / "g.npy"), "--num",
                       "4", "--seed", "1", "--out", str(y)], capsys)
    assert rc == 0
    assert np.array_equal(np.load(y), lsdd.sample(countdown, Sampler.euler(4), 4, seed=1, fixed=given).x.numpy())
    rc, out, _ = _run(["decode", "--model", "countdown", str(y), "--json"], capsys)
    assert rc == 0 and json.loads(out.splitlines()[0])["prompt"] == "9 8 7"
    # conditional countdown samples still score on the countdown task (whole samples)
    assert main(["eval", str(y)]) == 0


def _bad_files(tmp_path):
    np.save(tmp_path / "short.npy", np.full(10, 32))
    np.save(tmp_path / "big.npy", np.full(64, 99))
    np.save(tmp_path / "full.npy", np.zeros((1, 64), dtype=np.int64))
    np.save(tmp_path / "float.npy", np.zeros(64))
    (tmp_path / "blank.txt").write_text("\n  \n")
    return tmp_path


@pytest.mark.parametrize("argv,says", [
    (["--model", "text-absorb", "--prompt", "x" * 600], "the prompt is 600 tokens long, but the model's sequences are 128"),
    (["--prompt", "hi"], "model bundled:countdown has no tokenizer"),
    (["--fixed", "{d}/short.npy"], "rows of 10 tokens, but the model's sequences are 64"),
    (["--fixed", "{d}/big.npy"], "token id 99 is outside the model's vocabulary of 32"),
    (["--fixed", "{d}/full.npy"], "row 0 has no free position"),
    (["--fixed", "{d}/float.npy"], "expected a (L,) or (P, L) integer array"),
    (["--fixed", "{d}/none.npy"], "no such file"),
    (["--fixed", "{d}/blank.txt"], "must name a .npy"),
    (["--prompt-file", "{d}/none.txt"], "cannot read it"),
    (["--prompt-file", "{d}/blank.txt"], "holds no prompt"),
    (["--model", "text-absorb", "--infill", "no gap"], "has no gap"),
    (["--block", "16", "--nfe", "6"], "--nfe 6 is not a multiple of the 4 blocks of --block 16"),
    (["--sampler", "theta-rk2", "--block", "16", "--nfe", "12"], "is 3 per block, not a multiple of 2"),
    (["--block", "16", "--nfe", "8", "--prompt", "[1]"], "has no tokenizer"),
    (["--prompt", "a", "--infill", "b{{2}}"], "not allowed with argument"),
])
def test_cli_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, says):
    d = _bad_files(tmp_path)
    out = tmp_path / "x.npy"
    argv = [a.format(d=d) for a in argv]
    model = [] if "--model" in argv else ["--model", "countdown"]
    rc, _, err = _run(["sample", *model, "--nfe", "4", "--num", "2", "--out", str(out), *argv]
                      if "--nfe" not in argv else ["sample", *model, "--num", "2", "--out", str(out), *argv], capsys)
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "x.npy.json").exists()


def test_cli_text_outside_a_char_vocabulary(text_model, tmp_path, capsys):  # noqa: F811
    rc, _, err = _run(["sample", "--model", str(text_model), "--nfe", "2", "--prompt", "To be \u20ac", "--num", "2",
                       "--out", str(tmp_path / "x.npy")], capsys)
    assert rc == 2 and "character '\u20ac'" in err and "outside the model's" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,per_block", [
    (["--sampler", "euler", "--nfe", "8"], 4), (["--sampler", "tweedie", "--steps", "3"], 3),
    (["--sampler", "theta-rk2", "--nfe", "8"], 4), (["--counted", "--nfe", "8"], 4), (["--spread", "--nfe", "8"], 4),
    (["--sampler", "dilated", "--nfe", "8"], 4), (["--sampler", "halton", "--nfe", "8"], 4),
    (["--sampler", "confidence", "--nfe", "8"], 4), (["--learned", "{smp}"], 2),
])
def test_cli_block_for_every_sampler(countdown, tmp_path, capsys, flags, per_block):
    """--block 32 on 64 tokens: 2 blocks; --nfe is the total, --steps and a learned grid run once per block; the
    samples are lsdd.sample's with the sampler in blocks, bit for bit."""
    Sampler.euler(2).save(tmp_path / "s.json")
    flags = [f.format(smp=tmp_path / "s.json") for f in flags]
    x = tmp_path / "x.npy"
    rc, out, _ = _run(["sample", "--model", "countdown", *flags, "--block", "32", "--num", "4", "--seed", "3",
                       "--out", str(x)], capsys)
    calls = 2 * per_block * (1 if "theta-rk2" not in flags else 1)
    assert rc == 0 and f"{calls} network calls per sample (2 blocks x {per_block})" in out, out
    side = json.loads((tmp_path / "x.npy.json").read_text())
    smp = Sampler.from_dict(side["sampler"])
    assert smp.block == 32 and side["nfe"] == calls == smp.total_nfe(64)
    assert np.array_equal(np.load(x), lsdd.sample(countdown, smp, 4, seed=3).x.numpy())


def test_cli_adaptive_in_blocks_after_a_prompt(countdown, tmp_path, capsys):
    """eb / threshold: blocks are cut from the free positions after the prompt; the prompt stays."""
    x = tmp_path / "x.npy"
    rc, out, _ = _run(["sample", "--model", "countdown", "--sampler", "threshold", "--threshold", "0.5", "--block",
                       "16", "--fixed", str(_prefix_file(tmp_path, countdown)), "--num", "4", "--out", str(x)], capsys)
    assert rc == 0 and "at most" in out
    arr = np.load(x)
    assert (arr[:, :4] == [5, 4, 3, 2]).all() and (arr < 32).all()
    side = json.loads((tmp_path / "x.npy.json").read_text())
    assert side["nfe_mean"] >= 4  # 60 free positions in blocks of 16: at least one call per block


def _prefix_file(tmp_path, model):
    given = np.full(model.length, model.graph.num_tokens)
    given[:4] = [5, 4, 3, 2]
    np.save(tmp_path / "prefix.npy", given)
    return tmp_path / "prefix.npy"


# ---- lsdd eval on conditional text ------------------------------------------------------------------------------
def test_eval_scores_the_continuation_given_its_prompt(text, tmp_path, capsys):
    """gen_ppl of conditional samples is the mean over samples of exp(mean NLL of the generated tokens given all
    tokens before them) under the evaluator; entropy reads the generated tokens; the same from lsdd.evaluate."""
    from lsdd.distillation.statistics import unigram_entropy
    from lsdd.text.evaluator import load_evaluator

    x = tmp_path / "x.npy"
    assert main(["sample", "--model", "text-absorb", "--spread", "--nfe", "4", "--prompt", "KING RICHARD:", "--num",
                 "4", "--seed", "5", "--out", str(x)]) == 0
    m = tmp_path / "m.json"
    rc, out, _ = _run(["eval", "--task", "text", "--model", "text-absorb", str(x), "--json", str(m)], capsys)
    assert rc == 0 and "scored on their continuation given the prompt" in out
    got = json.loads(m.read_text())
    assert got["conditional"] is True
    samples = np.load(x)
    n = len(text.tokenizer.encode("KING RICHARD:"))
    ev = load_evaluator(None)
    assert ev.shares_vocabulary(text.tokenizer)
    nll = ev.token_nll([row for row in samples])
    want = np.mean([math.exp(float(v[n - 1:].mean())) for v in nll])  # tokens n.. given tokens 0..n-1 and on
    assert abs(got["metrics"]["gen_ppl"] - want) < 1e-9 * want
    ent = np.mean([float(unigram_entropy(torch.from_numpy(row[n:])[None])[0]) for row in samples])
    assert abs(got["metrics"]["entropy"] - ent) < 1e-12
    held = torch.zeros(samples.shape, dtype=torch.bool)
    held[:, :n] = True
    again = lsdd.evaluate(torch.from_numpy(samples), text, task="text", fixed=held)
    assert again["gen_ppl"] == got["metrics"]["gen_ppl"] and again["entropy"] == got["metrics"]["entropy"]
    # the unconditional score of the same array differs (it also scores the prompt's tokens)
    assert lsdd.evaluate(torch.from_numpy(samples), text, task="text")["gen_ppl"] != again["gen_ppl"]
