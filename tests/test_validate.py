"""Validation of learned samplers against their base (lsdd.distillation.validate, DistillConfig.validation, lsdd distill)."""

import json
import math

import pytest
import torch

from lsdd.cli import main
from lsdd.data.markov import generate_markov, markov_chain
from lsdd.distillation.distill import DistillConfig, base_sampler, make_teacher, validate_learned
from lsdd.sampling.sampler import Sampler
from lsdd.models import load_model
from lsdd.distillation.validate import (compare, frontier_slope, matched_nll_interval, mmd2, unigram_entropy)
from lsdd.distillation.bootstrap import resample_counts


def _phi(x, s):
    """Dense features by hand: normalised unigram counts, then normalised bigram counts a * S + b."""
    f = torch.zeros(s + s * s, dtype=torch.float64)
    for v in x:
        f[v] += 1 / len(x)
    for u, v in zip(x[:-1], x[1:]):
        f[s + u * s + v] += 1 / (len(x) - 1)
    return f


def test_mmd2_equals_the_u_statistic_by_hand():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 5, (7, 6), generator=g), torch.randint(0, 5, (9, 6), generator=g)
    fa, fb = torch.stack([_phi(x, 5) for x in a]), torch.stack([_phi(x, 5) for x in b])
    ka, kb = fa @ fa.T, fb @ fb.T
    ref = ((ka.sum() - ka.diag().sum()) / 42 + (kb.sum() - kb.diag().sum()) / 72 - 2 * (fa @ fb.T).mean())
    assert mmd2(a, b, 5) == pytest.approx(float(ref), rel=1e-12, abs=1e-15)


def test_mmd2_is_unbiased_and_separates_laws():
    chain = markov_chain(12, 2, 1)
    g = torch.Generator().manual_seed(0)
    same = [mmd2(generate_markov(60, 20, chain, g), generate_markov(30, 20, chain, g), 12) for _ in range(20)]
    # same law: estimates scatter around 0 (both signs), far below the distance to uniform tokens
    other = mmd2(torch.randint(0, 12, (60, 20), generator=g), generate_markov(30, 20, chain, g), 12)
    assert min(same) < 0 < max(same)
    assert abs(sum(same) / len(same)) < 0.05 * other


def test_unigram_entropy_hand_computed():
    x = torch.tensor([[1, 1, 2, 3], [4, 4, 4, 4]])
    assert unigram_entropy(x) == pytest.approx(1.5 * torch.log(torch.tensor(2.0)).item() / 2)


@pytest.fixture(scope="module")
def countdown_cache():
    model = load_model("countdown")
    cfg = DistillConfig(nfe=8, teacher_nfe=32, num_traj=96, batch_size=48, val_samples=192, seed=0)
    return model, cfg, make_teacher(model.score_fn, model.graph, model.noise, model.config.length, cfg,
                                    progress=False)


def test_validation_catches_a_bad_sampler_and_passes_a_good_one(countdown_cache):
    model, cfg, cache = countdown_cache
    times = torch.linspace(1.0, cfg.eps, cfg.nfe + 1, dtype=torch.float64)
    run = lambda phi: validate_learned(model.score_fn, model.graph, model.noise, cache.x_0, cfg,
                                       Sampler(times.tolist(), "euler", [phi] * cfg.nfe))
    bad = run(1e-3)  # almost nothing unmasks before the last step, which then fills every token independently
    assert not bad.learned_better and bad.mmd2_learned > 2 * bad.mmd2_base
    good = run(0.3)  # "unmask later": the schedule LSD learns on countdown (README), better than Euler there
    assert good.learned_better and good.mmd2_learned < good.mmd2_base
    # the base side is the same draw in both comparisons (shared streams)
    assert bad.mmd2_base == good.mmd2_base and bad.entropy_teacher == good.entropy_teacher


def _nlls(n, m, base_mean, diff, spread, seed=0):
    """Per-sample NLLs (base (n,), learned (n,), teacher (m,)) whose paired differences learned - base are
    ``diff`` plus +-``spread`` alternately (n even: mean exactly ``diff``, standard deviation ``spread``)."""
    g = torch.Generator().manual_seed(seed)
    base = base_mean + 0.3 * torch.rand(n, generator=g, dtype=torch.float64)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(n)[:n]
    return base, base + diff + spread * signs, torch.full((m,), base_mean, dtype=torch.float64)


def test_compare_records_everything():
    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 4, (10, 5), generator=g)
    v = compare(ref[:6], ref[4:], ref, 4, nfe=3)
    d = v.to_dict()
    assert set(d) == {"num_reference", "num_samples", "nfe", "nll_base", "nll_learned", "nll_teacher", "mmd2_base",
                      "mmd2_learned", "entropy_base", "entropy_learned", "entropy_teacher", "learned_better", "reasons",
                      "level", "resamples", "primary", "nll_diff", "nll_low", "nll_high", "mmd2_diff", "mmd2_low",
                      "mmd2_high", "entropy_diff", "entropy_low", "entropy_high", "slope", "nll_matched_diff",
                      "nll_matched_low", "nll_matched_high"}
    assert d["num_reference"] == 10 and d["num_samples"] == 6 and d["nfe"] == 3
    assert d["level"] == 0.95 and d["resamples"] == 1000
    # without NLLs the MMD^2 is the primary figure; its interval brackets the point difference
    assert d["primary"] == "mmd2" and d["mmd2_low"] <= d["mmd2_diff"] <= d["mmd2_high"]
    assert d["mmd2_diff"] == pytest.approx(d["mmd2_learned"] - d["mmd2_base"], rel=1e-6)
    # each failed check is named; NaN NLLs (not computed) are not a reason
    assert not v.learned_better and any("MMD" in r for r in v.reasons) and not any("NLL" in r for r in v.reasons)
    assert "learned sampler is NOT better" in v.summary() and "95% CI" in v.summary()
    # a sampler whose NLL is worse beyond noise is rejected
    w = compare(ref[4:], ref[:6], ref, 4, nfe=3, nll=_nlls(6, 10, 1.0, 0.5, 0.01))
    assert w.nll_low > 0 and any(r.startswith("model NLL difference +0.5000") for r in w.reasons)


def test_marginal_gain_within_noise_is_rejected_and_a_clear_one_accepted():
    # the same samples on both sides (MMD^2 and entropy differences exactly 0 in every resample), so the NLL
    # decides: paired differences -0.01 +- 0.5 over 512 pairs are within noise (standard error 0.022), -0.2 +- 0.5
    # are not
    g = torch.Generator().manual_seed(2)
    ref, x = torch.randint(0, 5, (64, 12), generator=g), torch.randint(0, 5, (512, 12), generator=g)
    marginal = compare(x, x, ref, 5, nfe=8, nll=_nlls(512, 64, 2.0, -0.01, 0.5))
    # better on the point estimate, not beyond noise: rejected, with the interval in the reason
    assert marginal.nll_learned < marginal.nll_base and marginal.nll_diff == pytest.approx(-0.01)
    assert marginal.nll_low < 0 < marginal.nll_high and not marginal.learned_better
    assert marginal.reasons == [f"model NLL difference {marginal.interval('nll')} not below 0 beyond noise"]
    clear = compare(x, x, ref, 5, nfe=8, nll=_nlls(512, 64, 2.0, -0.2, 0.5))
    assert clear.nll_high < 0 and clear.learned_better and clear.reasons == []
    # the guards: identical samples are never worse beyond noise
    assert clear.mmd2_low == clear.mmd2_high == 0.0 and clear.entropy_high >= 0.0
    assert "better than its base beyond noise (NLL lower at 95%" in clear.summary()
    assert "difference -0.2000 [95% CI -0.24" in clear.summary()


def test_the_level_sets_how_sure_the_verdict_must_be():
    # a gain of 2.3 standard errors: beyond noise at 90%, within it at 99.9%
    g = torch.Generator().manual_seed(3)
    ref, x = torch.randint(0, 5, (32, 8), generator=g), torch.randint(0, 5, (400, 8), generator=g)
    nll = _nlls(400, 32, 1.0, -0.023, 0.2)  # standard error 0.2 / 20 = 0.01
    assert compare(x, x, ref, 5, nfe=4, nll=nll, level=0.9).learned_better
    assert not compare(x, x, ref, 5, nfe=4, nll=nll, level=0.999).learned_better
    for bad in (0.0, 1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            compare(x, x, ref, 5, nfe=4, nll=nll, level=bad)


def test_mmd_worse_beyond_noise_vetoes_a_better_nll():
    # learned: random tokens, far from the reference's Markov chain; base: the chain itself. The NLLs say the
    # learned sampler is better, the MMD^2 guard says it is worse beyond noise
    chain = markov_chain(12, 2, 1)
    g = torch.Generator().manual_seed(0)
    ref, base = generate_markov(64, 20, chain, g), generate_markov(256, 20, chain, g)
    learned = torch.randint(0, 12, (256, 20), generator=g)
    v = compare(base, learned, ref, 12, nfe=4, nll=_nlls(256, 64, 2.0, -0.5, 0.1))
    assert v.nll_high < 0 and v.mmd2_low > 0 and not v.learned_better
    assert len(v.reasons) == 1 and v.reasons[0].startswith("MMD^2 x1e3 difference +") and "above 0" in v.reasons[0]


def test_frontier_slope_and_matched_nll_by_hand():
    assert frontier_slope(0.3, 0.1) == pytest.approx(3.0)
    assert frontier_slope(-0.3, 0.1) == 0.0  # a frontier that would reward sharpening reads as flat
    assert frontier_slope(0.3, 0.0) == 0.0 and frontier_slope(0.3, -0.1) == 0.0 and frontier_slope(float("inf"), 1) == 0
    f64 = lambda *v: torch.tensor(v, dtype=torch.float64)
    nll_b, nll_l, h_b, h_l = f64(2.0, 2.2, 2.4, 2.6), f64(1.9, 2.0, 2.3, 2.4), f64(3.0, 3.1, 3.2, 3.3), \
        f64(2.9, 3.0, 3.1, 3.0)
    # the frontier: warm - cold NLL differences mean 0.2, entropy differences mean 0.1 -> slope 2
    frontier = (f64(1.0, 1.0, 1.0, 1.0), f64(1.1, 1.3, 1.2, 1.2), f64(5.0, 5.0, 5.0, 5.0), f64(5.1, 5.1, 5.05, 5.15))
    ones = torch.ones(1, 4, dtype=torch.float64)  # the one resample that draws every pair once
    slope, iv = matched_nll_interval(nll_b, nll_l, h_b, h_l, frontier, ones, 0.95)
    # learned - base: NLL -0.15, entropy -0.15; at matched entropy -0.15 - 2 * (-0.15) = +0.15
    assert slope == pytest.approx(2.0) and iv.estimate == pytest.approx(0.15)
    assert iv.low == pytest.approx(0.15) and iv.high == pytest.approx(0.15)
    # resampling pairs recomputes the slope from the same pairs: every resample's figure by hand
    counts = resample_counts(4, 50, torch.Generator().manual_seed(0))
    _, iv = matched_nll_interval(nll_b, nll_l, h_b, h_l, frontier, counts, 1.0 - 1e-9)
    mean = lambda v: counts @ v / 4
    by_hand = mean(nll_l - nll_b) - (mean(frontier[1] - frontier[0]) / mean(frontier[3] - frontier[2])).clamp_min(0) \
        * mean(h_l - h_b).clamp_max(0)
    assert iv.low == pytest.approx(float(by_hand.min())) and iv.high == pytest.approx(float(by_hand.max()))
    # a learned sampler more diverse than its base gets no credit for it: the plain NLL difference
    slope, iv = matched_nll_interval(nll_b, nll_l, h_b, h_b + 0.2, frontier, ones, 0.95)
    assert slope == pytest.approx(2.0) and iv.estimate == pytest.approx(-0.15) == iv.low == iv.high


def test_the_frontier_is_drawn_only_when_the_learned_sampler_is_less_diverse():
    g = torch.Generator().manual_seed(4)
    ref = torch.randint(0, 6, (32, 10), generator=g)
    flat, varied = torch.randint(0, 2, (64, 10), generator=g), torch.randint(0, 6, (64, 10), generator=g)
    nll = _nlls(64, 32, 2.0, -0.3, 0.1)

    def never():
        raise AssertionError("the frontier was drawn although the learned samples are more diverse in every resample")

    v = compare(flat, varied, ref, 6, nfe=4, nll=nll, frontier=never)
    assert v.primary == "nll@entropy" and math.isnan(v.slope) and v.interval("nll_matched") == v.interval("nll")
    assert "more diverse than the base in every resample" in v.summary()
    calls = []

    def frontier():  # the base at two temperatures: the warmer set is more diverse and has a higher NLL
        calls.append(1)
        return flat, varied, nll[0], nll[0] + 1.0

    w = compare(varied, flat, ref, 6, nfe=4, nll=nll, frontier=frontier)
    assert calls == [1] and w.slope > 0 and w.nll_matched_diff > w.nll_diff


def test_a_learned_temperature_is_not_a_gain():
    # the markov model at 4 NFE: its base is more diverse than the teacher, and sharpening the values (beta 1.2 at
    # every step) lowers the NLL beyond noise and the MMD^2 with the entropy still within the guard - what the
    # plain NLL rule accepted. Read at matched entropy, it is the base's own frontier: rejected
    model = load_model("markov")
    cfg = DistillConfig(nfe=4, teacher_nfe=32, num_traj=96, batch_size=64, val_samples=256, seed=0, method="lsd-c")
    cache = make_teacher(model.score_fn, model.graph, model.noise, model.config.length, cfg, progress=False)
    base = base_sampler(cfg.resolve(model.graph))
    hot = base.replace(conditioning={"feature": "confidence", "slope": [0.0] * 4, "beta": [1.2] * 4})
    v = validate_learned(model.score_fn, model.graph, model.noise, cache.x_0, cfg, hot)
    assert v.primary == "nll@entropy" and v.slope > 0
    assert v.nll_high < 0 and v.mmd2_high < 0 and not any("sharpened" in r for r in v.reasons)
    assert v.nll_matched_diff > v.nll_diff and not v.nll_matched_high < 0 and not v.learned_better
    assert v.reasons == [f"model NLL difference at matched entropy {v.interval('nll_matched')} not below 0 beyond "
                         "noise"]
    assert "at matched entropy (base frontier slope dNLL/dH" in v.summary()


def test_model_nll_separates_data_from_noise():
    from lsdd.data.countdown import generate_countdown
    from lsdd.distillation.validate import model_nll

    model = load_model("countdown")
    g = torch.Generator().manual_seed(0)
    data, noise = generate_countdown(32, 64, generator=g), torch.randint(0, 32, (32, 64), generator=g)
    kw = dict(num_times=4, seed=0, batch_size=32)
    nll_data = model_nll(model.score_fn, model.graph, model.noise, data, **kw)
    nll_noise = model_nll(model.score_fn, model.graph, model.noise, noise, **kw)
    # the bound on real data is near the data entropy per token (15.6 / 64 = 0.24 nats), random tokens far above
    assert 0.1 < float(nll_data.mean()) < 0.6 and float(nll_noise.mean()) > 2.0
    # same seed, same estimate (common random numbers across sample sets)
    torch.testing.assert_close(model_nll(model.score_fn, model.graph, model.noise, data, **kw), nll_data)


def test_cli_writes_base_when_learned_is_no_better(tmp_path, capsys):
    # with 0 epochs the "learned" sampler is the base itself: not better, so the base is written, said plainly
    out = tmp_path / "s.json"
    args = ["distill", "--method", "lsd", "--model", "countdown", "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "32",
            "--batch-size", "16", "--epochs", "0", "--val-samples", "32"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the learned sampler is NOT better than its base (model NLL difference" in text
    assert "holds the base sampler" in text and "--force" in text
    art = json.loads(out.read_text())
    assert art["coeffs"] is None and art["movers"] == "spread"  # the base: Phi = 1, with distill's default movers
    prov = art["provenance"]
    assert prov["written"].startswith("base sampler") and prov["validation"]["learned_better"] is False
    assert prov["validation"]["num_reference"] == 8 and prov["rejected_learned"]["coeffs"] == [1.0] * 4
    # the same sampler on both sides: every paired difference is 0, so the NLL interval is [0, 0], recorded
    val = prov["validation"]
    assert val["nll_diff"] == val["nll_low"] == val["nll_high"] == 0.0 and val["level"] == 0.95
    assert "difference +0.0000 [95% CI +0.0000, +0.0000]" in text
    # --force writes the learned sampler anyway, with a warning
    assert main([*args, "--force", "--out", str(tmp_path / "f.json")]) == 0
    assert "written anyway (--force)" in capsys.readouterr().out
    assert json.loads((tmp_path / "f.json").read_text())["provenance"]["written"] == "learned sampler"


def test_validation_config_errors():
    with pytest.raises(ValueError, match="validation needs >= 2 held-out"):
        DistillConfig(num_traj=4, val_frac=0.25).validate()
    DistillConfig(num_traj=4, validation=False).validate()  # fine without validation
    assert main(["distill", "--model", "countdown", "--num-traj", "4", "--out", "/tmp/never.json"]) == 2


def test_bootstrap_is_deterministic_and_exact_without_resampling():
    from lsdd.distillation.bootstrap import mmd2_difference_resamples, paired_mean_interval, resample_counts

    g = torch.Generator().manual_seed(0)
    ref, base, learned = (torch.randint(0, 5, (k, 7), generator=g) for k in (9, 12, 12))
    nll = (1.0 + torch.rand(12, generator=g, dtype=torch.float64), torch.rand(12, generator=g, dtype=torch.float64),
           torch.ones(9, dtype=torch.float64))
    # the same seed gives the same verdict and intervals, another seed other intervals
    a, b, c = (compare(base, learned, ref, 5, nfe=2, nll=nll, seed=s).to_dict() for s in (4, 4, 5))
    assert a == b and a["nll_low"] != c["nll_low"] and a["mmd2_low"] != c["mmd2_low"]
    # a "resample" that draws every pair once recomputes the point figures exactly: the mean difference, and
    # the unbiased MMD^2 difference (pairs of distinct samples only)
    once, ref_once = torch.ones(1, 12, dtype=torch.float64), torch.ones(1, 9, dtype=torch.float64)
    assert paired_mean_interval(nll[0], nll[1], once, 0.95).low == pytest.approx(float((nll[1] - nll[0]).mean()))
    got = float(mmd2_difference_resamples(base, learned, ref, 5, once, ref_once)[0])
    assert got == pytest.approx(mmd2(learned, ref, 5) - mmd2(base, ref, 5), rel=1e-10)
    # resample counts: each row draws n items in all
    assert (resample_counts(11, 50, torch.Generator().manual_seed(0)).sum(1) == 11).all()


def test_bootstrap_interval_covers_a_known_mean_at_about_its_level():
    from lsdd.distillation.bootstrap import paired_mean_interval, resample_counts

    # 200 synthetic data sets of 100 paired differences with mean 0.3 (exponential noise, skewed): the 90%
    # interval covers 0.3 in about 90% of them (binomial sd 2.1%), and is narrow beside the noise
    g = torch.Generator().manual_seed(7)
    covered, widths = 0, []
    for _ in range(200):
        d = 0.3 + torch.empty(100, dtype=torch.float64).exponential_(generator=g) - 1.0
        iv = paired_mean_interval(torch.zeros(100, dtype=torch.float64), d, resample_counts(100, 1000, g), 0.9)
        covered += iv.low < 0.3 < iv.high
        widths.append(iv.high - iv.low)
    assert 0.84 <= covered / 200 <= 0.96
    # width about 2 x 1.645 x sd / sqrt(n) = 0.33
    assert 0.28 < sum(widths) / len(widths) < 0.38


def test_val_level_flag_takes_a_number_between_0_and_1(tmp_path, capsys):
    for bad in ("1", "0", "1.5", "-0.2", "high", "nan"):
        with pytest.raises(SystemExit) as e:
            main(["distill", "--model", "countdown", "--val-level", bad, "--out", str(tmp_path / "s.json")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().split("\n")
        assert len(err) == 1 and "argument --val-level: expected a number strictly between 0 and 1" in err[0], err
    assert not list(tmp_path.iterdir())
    # the Python face checks it too, before any work
    with pytest.raises(ValueError, match="val_level must lie strictly between 0 and 1"):
        DistillConfig(val_level=1.0).validate()


def test_old_sampler_files_with_point_verdicts_still_load_and_print(capsys):
    from pathlib import Path

    from lsdd.cli.demo import _interval

    # written before the intervals (its validation has nll_z and no *_low/*_high): loads, and prints without them
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "distill_text_absorb_nfe8.json"
    v = Sampler.load(path).provenance["validation"]
    assert "nll_z" in v and "nll_low" not in v and _interval(v, "nll") == ""
    new = compare(*(torch.zeros(4, 3, dtype=torch.long),) * 3, 2, nfe=1, nll=_nlls(4, 4, 1.0, -0.5, 0.1)).to_dict()
    assert _interval(new, "nll").startswith(", difference -0.5000 [95% CI -0.")


def test_match_temperature_is_linear_in_t_and_clamped():
    from lsdd.distillation.validate import MIN_MATCH_TEMPERATURE, PROBE_TEMPERATURE, match_temperature

    # entropy 4.35 at T = 1, falling 1 nat per unit of T down to the probe
    probe = 4.35 - (1.0 - PROBE_TEMPERATURE)
    assert match_temperature(4.35, probe, 4.25) == pytest.approx(0.90)  # beyond the probe: where the line meets it
    assert match_temperature(4.35, probe, 4.35 - (1.0 - PROBE_TEMPERATURE) / 2) == PROBE_TEMPERATURE  # within reach
    assert match_temperature(4.35, probe, 3.0) == MIN_MATCH_TEMPERATURE  # never colder than the floor
    assert match_temperature(4.35, 4.36, 4.0) == PROBE_TEMPERATURE  # the probe did not lower the entropy
