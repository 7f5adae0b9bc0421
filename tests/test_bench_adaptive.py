"""`lsdd bench --methods eb threshold` (adaptive samplers at equal mean NFE) and `--dilated-block` (DUS in blocks)."""

import shlex

import numpy as np
import pytest
import torch

import lsdd
from lsdd.bench import BenchConfig, format_table, run_bench
from lsdd.cli import main
from lsdd.models import load_model
from lsdd.report import row_command
from lsdd.sampling.adaptive import match_budget
from lsdd.sampling.sampler import Sampler
from lsdd.tasks import get_task

from test_conditioned import _tiny_model

N, B, NUM, BATCH, SEED = 4, 4, 16, 8, 3


@pytest.fixture(scope="module")
def absorb(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("absorb"), "absorbing")


@pytest.fixture(scope="module")
def bench(absorb):
    model = load_model(absorb)
    cfg = BenchConfig(nfes=(N,), teacher_nfe=8, bases=("euler",), methods=("eb", "threshold", "dilated"),
                      num_samples=NUM, batch_size=BATCH, seed=SEED, timing_repeats=0, keep_samples=True,
                      block=B, frontier=(0.8, 1.0))
    return model, run_bench(model, get_task("tokens"), cfg, progress=False, log=lambda *_: None)


def test_rows_and_their_order(bench):
    _, result = bench
    assert [r.label for r in result.rows] == ["teacher-euler", "uniform-euler", "DILATED-euler",
                                              f"DILATED-B{B}-euler", "eb", "threshold", f"eb-B{B}", f"threshold-B{B}"]
    assert all(r.nfe == N for r in result.rows[1:])


@pytest.mark.parametrize("rule", ["eb", "threshold"])
def test_adaptive_rows_in_blocks(bench, rule):
    """Fast-dLLM's setting: the rule within blocks of B tokens, matched to the same mean NFE; every sample makes at
    least one call per block, and the row is lsdd.sample with that sampler, bit for bit."""
    model, result = bench
    r = next(r for r in result.rows if r.label == f"{rule}-B{B}")
    assert r.method == rule and r.sampler.block == B
    blocks = -(-model.length // B)
    assert blocks <= r.nfe_mean <= N
    assert match_budget(model, rule, N, num=NUM, seed=SEED + 1, batch_size=BATCH, block=B) == (r.param, r.nfe_mean)
    direct = lsdd.sample(model, Sampler.adaptive_rule(rule, r.param, block=B), NUM, seed=SEED + 1, batch_size=BATCH)
    assert torch.equal(direct.x, r.samples) and direct.nfe_mean == r.nfe_mean


@pytest.mark.parametrize("rule,name", [("eb", "gamma"), ("threshold", "tau")])
def test_adaptive_row_is_matched_to_the_mean_nfe_and_redrawn_exactly(bench, rule, name):
    model, result = bench
    r = next(r for r in result.rows if r.method == rule)
    assert r.sampler.adaptive == {"rule": rule, name: r.param}
    assert r.nfe_mean <= N and r.nfe_max >= r.nfe_mean and r.steps is None
    # the most careful parameter (about one token per call) does not fit the budget: the match is not trivial
    careful = 0.0 if rule == "eb" else 1.0
    assert lsdd.sample(model, Sampler.adaptive_rule(rule, careful), NUM, seed=SEED + 1,
                       batch_size=BATCH).nfe_mean > N
    assert r.param != careful
    # the parameter is match_budget's on the row's own samples and seeds
    assert match_budget(model, rule, N, num=NUM, seed=SEED + 1, batch_size=BATCH) == (r.param, r.nfe_mean)
    # the row is a plain lsdd.sample with that parameter and the bench's seed, bit for bit
    direct = lsdd.sample(model, Sampler.adaptive_rule(rule, r.param), NUM, seed=SEED + 1, batch_size=BATCH)
    assert torch.equal(direct.x, r.samples)
    assert direct.nfe_mean == r.nfe_mean and direct.nfe == r.nfe_max
    assert r.nfe_mean == float(direct.nfe_per_sample.double().mean())
    assert r.metrics == get_task("tokens").compute(direct.x)
    # its frontier: same seeds, so T = 1 is the row
    assert [t for t, _ in r.frontier] == [0.8, 1.0] and r.frontier[1][1] == r.metrics


def test_block_row_is_dus_in_blocks(bench):
    model, result = bench
    r = next(r for r in result.rows if r.label == f"DILATED-B{B}-euler")
    want = Sampler.base("euler", N // 2, movers="dilated", block=B)  # 8 tokens: 2 blocks, the grid once each
    assert r.method == "dilated" and r.sampler == want and r.nfe_mean is None
    assert torch.equal(lsdd.sample(model, want, NUM, seed=SEED + 1, batch_size=BATCH).x, r.samples)
    whole = next(r for r in result.rows if r.label == "DILATED-euler")
    assert whole.sampler.block is None


def test_table_json_and_report_commands(bench, absorb, tmp_path, monkeypatch):
    _, result = bench
    text = format_table(result, get_task("tokens"))
    for r in result.rows:
        if r.nfe_mean is not None:
            assert f"{N} (mean {r.nfe_mean:.1f}, max {r.nfe_max})" in text
            assert f"{'gamma' if r.method == 'eb' else 'tau'}={r.param:.4g}" in text
    assert "equal mean NFE" in text
    rows = result.to_dict()["rows"]
    eb = next(d for d in rows if d["method"] == "eb")
    assert eb["nfe"] == N and eb["param"] == eb["sampler"]["adaptive"]["gamma"] and eb["nfe_max"] >= eb["nfe_mean"]
    from lsdd.report import write_report

    write_report(result, get_task("tokens"), tmp_path / "r.html", model=absorb)
    page = (tmp_path / "r.html").read_text()
    assert f"{N} (mean {eb['nfe_mean']:.1f}, max {eb['nfe_max']})" in page and "--sampler eb --gamma" in page
    # each row's lsdd sample command draws the row's samples again
    monkeypatch.chdir(tmp_path)
    for i, r in enumerate(result.rows):
        if r.label not in ("eb", "threshold", "DILATED-euler", f"DILATED-B{B}-euler"):
            continue
        cmd = row_command(r, result, absorb, i)
        assert cmd.sampler_file is None, r.label  # lsdd sample's own flags, no file
        argv = shlex.split(cmd.command)[1:]
        assert main(argv) == 0
        assert np.array_equal(np.load(argv[argv.index("--out") + 1]), r.samples.numpy()), r.label


def test_cli_refusals_and_help(absorb, tmp_path, capsys):
    uni = _tiny_model(tmp_path / "u", "uniform")
    base = ["bench", "--task", "tokens", "--nfe", "4", "--teacher-nfe", "8", "--num-samples", "8", "--bases", "euler",
            "--timing-repeats", "0"]
    for rule in ("eb", "threshold"):
        assert main([*base, "--model", uni, "--methods", rule]) == 2
        err = capsys.readouterr().err.strip()
        assert "absorbing graph only" in err and rule in err and len(err.splitlines()) == 1
    assert main([*base, "--model", absorb, "--methods", "halton", "--block", "4"]) == 2
    assert "--block 4" in capsys.readouterr().err
    assert main([*base, "--model", absorb, "--methods", "dilated", "--dilated-block", "8"]) == 2  # = the length
    err = capsys.readouterr().err
    assert "got 8" in err and "[1, 7]" in err
    # DUS in blocks runs its grid once per block: 8 tokens in blocks of 3 are 3 blocks, and 4 NFE do not split
    assert main([*base, "--model", absorb, "--methods", "dilated", "--block", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "NFE [4] is not a multiple of 3" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main([*base, "--model", absorb, "--methods", "dilated", "--dilated-block", "0"])
    assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "equal mean NFE" in out and "at most N" in out and "--block" in out


def test_an_adaptive_sampler_file_is_refused_as_a_learned_row(tmp_path):
    """--learned takes fixed samplers; an adaptive one is pointed to --methods eb/threshold, before any work."""
    from lsdd.bench import BenchConfig, run_bench
    from lsdd.models import load_model
    from lsdd.sampling.sampler import Sampler
    from lsdd.tasks import get_task

    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=(), num_samples=8, batch_size=8,
                      timing_repeats=0, learned=(("eb.json", Sampler.eb(0.5)),))
    with pytest.raises(ValueError, match="bench it with --methods eb"):
        run_bench(load_model("countdown"), get_task("countdown"), cfg, progress=False, log=lambda *a: None)
