"""Generative frontiers (`lsdd bench --frontier`) and the HTML report (`lsdd bench --report`)."""

import json
import math
import re

import pytest
import torch

from lsdd.bench import BenchConfig, row_sampler, run_bench, value_at_diversity
from lsdd.cli import main
from lsdd.models import load_model
from lsdd.sampling.sampler import Sampler
from lsdd.tasks import get_task

from test_cli_sampling import _tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(_tiny(tmp_path_factory.mktemp("tiny"), 0))


def _same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN equal to NaN (countdown's nll_valid is NaN without valid samples)."""
    return list(a) == list(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in
                                      zip(a.values(), b.values()))


# ---- the interpolation rule, on hand-made curves ----------------------------------------------------------------
CURVE = [(0.8, 10.0, 1.0), (1.0, 20.0, 2.0), (1.25, 40.0, 4.0)]  # (T, quality, diversity)


def test_value_at_diversity_bracketed_is_linear_in_diversity():
    # between T = 1 (d 2, q 20) and T = 1.25 (d 4, q 40): a quarter of the way in d is a quarter of the way in q
    assert value_at_diversity(CURVE, 2.5) == pytest.approx(25.0)
    # between T = 0.8 and T = 1, any point order
    assert value_at_diversity(CURVE[::-1], 1.5) == pytest.approx(15.0)


def test_value_at_diversity_exact_point_gives_its_quality():
    # the target equals one point's diversity: that point's quality exactly (no arithmetic)
    assert value_at_diversity(CURVE, 2.0) == 20.0
    assert value_at_diversity(CURVE, 4.0, log_scale=True) == 40.0


def test_value_at_diversity_not_bracketed_is_nan():
    # beyond either end of the sweep: NaN, never an extrapolation
    assert math.isnan(value_at_diversity(CURVE, 0.5))
    assert math.isnan(value_at_diversity(CURVE, 4.5))
    assert math.isnan(value_at_diversity([], 1.0))
    assert math.isnan(value_at_diversity(CURVE, float("nan")))
    # a non-finite point is left out: here it would have bracketed the target
    assert math.isnan(value_at_diversity([(0.8, 10.0, 1.0), (1.0, float("nan"), 3.0)], 2.0))


def test_value_at_diversity_log_scale_interpolates_log_quality():
    # halfway in diversity between q = 10 and q = 1000: the geometric mean 100 in log, the mean 505 in linear
    curve = [(0.8, 10.0, 1.0), (1.0, 1000.0, 3.0)]
    assert value_at_diversity(curve, 2.0, log_scale=True) == pytest.approx(100.0)
    assert value_at_diversity(curve, 2.0) == pytest.approx(505.0)


def test_value_at_diversity_direction_and_noise():
    # a diversity that falls as T rises (countdown's start_tv: lower is more diverse) is bracketed the same way
    falling = [(0.8, 0.4, 0.30), (1.0, 0.5, 0.20), (1.25, 0.7, 0.10)]
    assert value_at_diversity(falling, 0.15) == pytest.approx(0.6)
    # a noisy, non-monotone curve brackets the target twice: the segment nearest T = 1 is read
    noisy = [(0.5, 1.0, 1.0), (0.7, 2.0, 3.0), (1.0, 5.0, 1.5), (1.25, 6.0, 2.5)]
    # brackets of d = 2: [0.5, 0.7] (q 1.5), [0.7, 1.0] (q 4.0) and [1.0, 1.25] (q 5.5); the last has the smallest
    # |mean log T| (0.11 against 0.18 and 0.52)
    assert value_at_diversity(noisy, 2.0) == pytest.approx(5.5)


# ---- a tiny bench ---------------------------------------------------------------------------------------------
def test_bench_frontier_curves_for_every_row(tiny):
    """Every non-teacher row (baselines, learned, movers, theta, temperature controls) gets a curve; T = 1 is
    the row itself (same seeds); at_teacher_diversity follows the rule above."""
    model = load_model(tiny)
    task = get_task("tokens")
    cfg = BenchConfig(nfes=(2, 4), teacher_nfe=8, bases=("euler", "tweedie"), methods=("lsd", "spread", "theta-rk2"),
                      num_samples=16, batch_size=16, timing_repeats=0, distill={"epochs": 1},
                      temperature_control=True, temperature_iters=2, frontier=(0.8, 1.0))
    result = run_bench(model, task, cfg, progress=False, log=lambda *_: None)
    from lsdd import sample

    methods = {r.method for r in result.rows}
    assert {"uniform", "lsd", "spread", "theta-rk2", "temperature"} <= methods
    q, d = result.headline
    teacher = result.rows[0]
    assert teacher.frontier is None and teacher.at_teacher_diversity is None
    for r in result.rows[1:]:
        assert [t for t, _ in r.frontier] == [0.8, 1.0], r.label
        # T = 1 is the row's own draw (not drawn again): the row's sampler redrawn with the frontier's seeds at
        # T = 1 gives the same scores, so reusing them is exact
        assert _same(r.frontier[1][1], r.metrics), r.label
        smp = row_sampler(r)
        redrawn = sample(model, smp.with_temperature(smp.temperature), 16, seed=cfg.seed + 1, batch_size=16)
        assert _same(task.compute(redrawn.x), r.metrics), r.label
        want = value_at_diversity([(t, m[q], m[d]) for t, m in r.frontier], teacher.metrics[d])
        assert r.at_teacher_diversity == want or (math.isnan(want) and math.isnan(r.at_teacher_diversity))
    # the rebuilt samplers of the rows that keep none: the uniform grid of the row's base, the theta rule, Euler at
    # the control's temperature
    by = {(r.method, r.base, r.nfe): r for r in result.rows}
    assert row_sampler(by[("uniform", "tweedie", 4)]).rule == "tweedie"
    assert row_sampler(by[("theta-rk2", "theta-rk2", 4)]).steps == 2
    ctrl = next(r for r in result.rows if r.method == "temperature")
    assert row_sampler(ctrl).temperature == ctrl.temperature and ctrl.temperature is not None
    # the curves go into the JSON
    d_json = json.loads(json.dumps(result.to_dict()))
    row = d_json["rows"][1]
    assert row["frontier"][0][0] == 0.8 and set(row["frontier"][0][1]) == set(result.rows[1].metrics)
    assert "at_teacher_diversity" in row and d_json["config"]["frontier"] == [0.8, 1.0]


def test_bench_frontier_temperature_is_the_sampler_value_temperature(tiny):
    """A frontier point at T is lsdd.sample with the row's Sampler at temperature T, same seeds."""
    model = load_model(tiny)
    task = get_task("tokens")
    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=(), num_samples=16, batch_size=16,
                      timing_repeats=0, frontier=(0.7,))
    result = run_bench(model, task, cfg, progress=False, log=lambda *_: None)
    from lsdd import sample

    x = sample(model, Sampler.euler(4).with_temperature(0.7), 16, seed=cfg.seed + 1, batch_size=16).x
    assert _same(result.rows[1].frontier[0][1], task.compute(x))


def test_bench_frontier_bad_temperature_is_refused_before_work(tiny):
    with pytest.raises(ValueError, match="frontier temperatures must be finite and > 0, got -1"):
        run_bench(load_model(tiny), get_task("tokens"), BenchConfig(nfes=(2,), teacher_nfe=8, frontier=(1.0, -1.0)),
                  progress=False)


def test_cli_frontier_and_report(tiny, tmp_path, capsys):
    js, png, html_path = tmp_path / "b.json", tmp_path / "b.png", tmp_path / "r.html"
    rc = main(["bench", "--model", tiny, "--task", "countdown", "--nfe", "2", "--teacher-nfe", "8",
               "--bases", "euler", "--methods", "spread", "--num-samples", "16", "--batch-size", "16",
               "--timing-repeats", "0", "--frontier", "0.8", "1.0", "--json", str(js), "--plot", str(png),
               "--report", str(html_path)])
    assert rc == 0
    out = capsys.readouterr().out
    # the table has the frontier column; its footnote names the rule
    assert "at teacher's H" in out and "no extrapolation" in out
    d = json.loads(js.read_text())
    for r in d["rows"][1:]:
        assert [t for t, _ in r["frontier"]] == [0.8, 1.0]
    # the frontier plot goes next to --plot
    fpng = tmp_path / "b_frontier.png"
    assert fpng.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html_path.read_text()
    # the table, both plots as data URIs, the samples, a command per row
    assert "<table>" in page and "at teacher&#x27;s H" in page and "any_violation" in page
    assert all(f"<td>{r['label']}</td>" in page for r in d["rows"])
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)) == 2
    assert "Samples" in page and page.count("lsdd sample --model") == len(d["rows"])
    assert "--sampler euler --nfe 2 --spread" in page
    # self-contained: no external references (no links, scripts, remote or file URLs, CSS imports)
    assert not re.search(r"<link|<script|https?://|file:|url\(|@import", page)
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_cli_frontier_bad_input(tiny, tmp_path, capsys):
    # output paths are checked before any work, naming the flag
    assert main(["bench", "--model", tiny, "--report", str(tmp_path / "r.txt")]) == 2
    assert "--report" in capsys.readouterr().err
    assert main(["bench", "--model", tiny, "--frontier-plot", str(tmp_path / "f.png")]) == 2
    assert "needs --frontier" in capsys.readouterr().err
    assert main(["bench", "--model", tiny, "--frontier", "--frontier-plot", str(tmp_path / "f.jpg")]) == 2
    assert "--frontier-plot" in capsys.readouterr().err
    # a temperature that is not a positive number is named
    with pytest.raises(SystemExit) as e:
        main(["bench", "--model", tiny, "--frontier", "0"])
    assert e.value.code == 2 and "'0'" in capsys.readouterr().err


def test_report_commands_redraw_the_rows(tiny, tmp_path):
    """The command the report gives a row draws that row's samples: lsdd sample with its flags (or its learned
    file) and the bench's seed + 1."""
    from lsdd.report import row_command

    model = load_model(tiny)
    task = get_task("tokens")
    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=("lsd", "spread"), num_samples=16,
                      batch_size=16, timing_repeats=0, keep_samples=True, validate=False, distill={"epochs": 1})
    result = run_bench(model, task, cfg, progress=False, log=lambda *_: None)
    for i, r in enumerate(result.rows[1:], start=1):
        c = row_command(r, result, tiny, i)
        out = tmp_path / f"{i}.npy"
        argv = c.command.split()[1:]
        argv[argv.index("--out") + 1] = str(out)
        if c.sampler_file:  # a learned row: its sampler file, as the page carries it
            path = tmp_path / c.sampler_file
            path.write_text(c.sampler_json)
            argv[argv.index("--learned") + 1] = str(path)
        assert main([*argv, "--quiet"]) == 0, c.command
        import numpy as np

        assert torch.equal(torch.from_numpy(np.load(out)), torch.as_tensor(r.samples)), c.command
    assert any(row_command(r, result, tiny, 0).sampler_file for r in result.rows if r.method == "lsd")


def test_bench_frontier_reads_log_quality_for_gap_in_log_tasks(tiny):
    """Tasks whose headline is a perplexity (``gap_in_log``: text's gen_ppl) interpolate log quality."""
    from lsdd.tasks import TokensTask

    class LogTokens(TokensTask):
        gap_in_log = True

    task = LogTokens()
    cfg = BenchConfig(nfes=(4,), teacher_nfe=8, bases=("euler",), methods=(), num_samples=16, batch_size=16,
                      timing_repeats=0, frontier=(0.25, 1.0, 4.0))
    result = run_bench(load_model(tiny), task, cfg, progress=False, log=lambda *_: None)
    q, d = result.headline
    row, target = result.rows[1], result.rows[0].metrics[d]
    curve = [(t, m[q], m[d]) for t, m in row.frontier]
    want = value_at_diversity(curve, target, log_scale=True)
    assert math.isfinite(want)  # the wide sweep brackets the teacher here, so the check below is not vacuous
    assert row.at_teacher_diversity == pytest.approx(want)
    assert want != pytest.approx(value_at_diversity(curve, target), rel=1e-9)


def test_a_learned_row_that_is_its_base_says_why():
    from lsdd.bench import BenchRow, display_label

    base = Sampler.spread(4)
    row = lambda accepted, prov: BenchRow("LSD-C-euler", "euler", "lsd-c", 4, {}, 0.0,
                                          sampler=base.replace(provenance=prov), accepted=accepted)
    assert display_label(row(True, {})) == "LSD-C-euler"
    assert display_label(row(False, {"written": "base sampler"})) == "LSD-C-euler (rejected: base)"
    early = {"early_exit": {"skipped": True, "base": True, "p": 0.6}}
    assert display_label(row(False, early)) == "LSD-C-euler (early exit: base)"
