"""Validation of learned samplers against their base (lsdd.distillation.validate, DistillConfig.validation, lsdd distill)."""

import json

import pytest
import torch

from lsdd.cli import main
from lsdd.data.markov import generate_markov, markov_chain
from lsdd.distillation.distill import DistillConfig, make_teacher, validate_learned
from lsdd.sampling.sampler import Sampler
from lsdd.models import load_model
from lsdd.distillation.validate import compare, mmd2, unigram_entropy


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


def test_compare_records_everything():
    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 4, (10, 5), generator=g)
    v = compare(ref[:6], ref[4:], ref, 4, nfe=3)
    d = v.to_dict()
    assert set(d) == {"num_reference", "num_samples", "nfe", "nll_base", "nll_learned", "nll_teacher", "mmd2_base",
                      "mmd2_learned", "entropy_base", "entropy_learned", "entropy_teacher", "learned_better", "reasons", "nll_z"}
    assert d["num_reference"] == 10 and d["num_samples"] == 6 and d["nfe"] == 3
    # each failed check is named; NaN NLLs (not computed) are not a reason
    assert not v.learned_better and any("MMD" in r for r in v.reasons) and not any("NLL" in r for r in v.reasons)
    assert "learned sampler is NOT better" in v.summary()
    # a sampler whose NLL is worse is rejected even if its MMD is better
    w = compare(ref[4:], ref[:8], ref, 4, nfe=3, nll=(1.0, 1.5, 0.9))
    assert any(r.startswith("model NLL 1.5000 >= base 1.0000") for r in w.reasons)


def test_sharpened_sampler_is_rejected():
    # a sampler that repeats one token has low entropy: rejected as sharpened whatever its distances say
    g = torch.Generator().manual_seed(1)
    ref = torch.randint(0, 6, (40, 12), generator=g)
    base = torch.randint(0, 6, (40, 12), generator=g)
    sharp = torch.zeros(40, 12, dtype=torch.long)
    v = compare(base, sharp, ref, 6, nfe=4, nll=(2.0, 0.1, 1.8))
    assert not v.learned_better and any("sharpened" in r for r in v.reasons)


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
    args = ["distill", "--model", "countdown", "--nfe", "4", "--teacher-nfe", "8", "--num-traj", "32",
            "--batch-size", "16", "--epochs", "0", "--val-samples", "32"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the learned sampler is NOT better (model NLL" in text
    assert "holds the base sampler" in text and "--force" in text
    art = json.loads(out.read_text())
    assert art["coeffs"] is None and art["movers"] == "spread"  # the base: Phi = 1, with distill's default movers
    prov = art["provenance"]
    assert prov["written"].startswith("base sampler") and prov["validation"]["learned_better"] is False
    assert prov["validation"]["num_reference"] == 8 and prov["rejected_learned"]["coeffs"] == [1.0] * 4
    # --force writes the learned sampler anyway, with a warning
    assert main([*args, "--force", "--out", str(tmp_path / "f.json")]) == 0
    assert "written anyway (--force)" in capsys.readouterr().out
    assert json.loads((tmp_path / "f.json").read_text())["provenance"]["written"] == "learned sampler"


def test_validation_config_errors():
    with pytest.raises(ValueError, match="validation needs >= 2 held-out"):
        DistillConfig(num_traj=4, val_frac=0.25).validate()
    DistillConfig(num_traj=4, validation=False).validate()  # fine without validation
    assert main(["distill", "--model", "countdown", "--num-traj", "4", "--out", "/tmp/never.json"]) == 2


def test_nll_z_hand_computed():
    from lsdd.distillation.validate import nll_z

    base = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    learned = base - 1.0
    # difference -1 over sqrt(var/4 + var/4) with var = 5/3 (unbiased): -1 / sqrt(5/6)
    assert nll_z(base, learned) == pytest.approx(-1 / (5 / 6) ** 0.5)
