"""Counted movers (``draws.CountedLaw``, ``lsdd distill --method lsd-c --counted``): the exact law of the mover set
against the draw's frequencies, the whole sampler's exact output law against its samples, and the property that
makes it exact when L <= M on a true score."""

import math

import pytest
import torch

from conftest import countdown_law, sampler_law_vs_samples
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.conditioned import ConditionedParams, ConditionedRule
from lsdd.distillation.distill import DistillConfig
from lsdd.sampling.draws import CountedLaw, make_generator
from lsdd.errors import UserError
from lsdd.sampling.exact import ExactScore, counted_set_probs, exact_sampler_law
from lsdd.graphs import Absorbing
from lsdd.noise import LogLinear
from lsdd.sampling.schedules import uniform_times

MOVE = torch.tensor([[0.3, 0.0, 0.7, 0.2], [1.0, 1.0, 1.0, 1.0], [0.1, 0.5, 0.05, 0.9], [0.0, 0.0, 0.0, 0.0]],
                    dtype=torch.float64)


def _law(move):
    b, length = move.shape
    x = torch.full((b, length), 3)
    w = torch.rand(b, length, 4, generator=torch.Generator().manual_seed(0))
    w[..., 3] = 0.0
    return CountedLaw(x, move, w, torch.tensor([True, True, True, False]))


def test_mover_set_law_matches_the_draw():
    """P(movers = S) by enumeration (stochastic rounding of the expected count, then Plackett-Luce) against the
    frequencies of 40,000 draws, set by set (chi-square), for rows with fractional, forced and no movers."""
    probs = counted_set_probs(MOVE)
    assert torch.allclose(probs.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    n = 40000
    big = _law(MOVE.repeat(n, 1))
    moving = big.movers(make_generator(0))
    assert not moving.view(n, 4, 4)[:, 0, 1].any()  # a token with move 0 never moves
    bits = (moving.long() * 2 ** torch.arange(4)).sum(-1).view(n, 4)
    for b in range(4):
        emp = torch.bincount(bits[:, b], minlength=16).double() / n
        live = probs[b] > 0
        assert float(emp[~live].sum()) == 0.0
        chi2 = float((((emp - probs[b]) ** 2 / probs[b].clamp_min(1e-300))[live]).sum() * n)
        assert chi2 < 40.0, (b, chi2)  # <= 9 live cells; P(chi2 > 40) < 1e-5 under the null
    # the count is floor or ceil of the expected count, never more spread: row 2 has E = 1.55
    count = moving.view(n, 4, 4).sum(-1)[:, 2]
    assert set(count.tolist()) == {1, 2} and abs(count.double().mean().item() - 1.55) < 0.01
    assert (moving.view(n, 4, 4)[:, 1].all(-1)).all()  # all forced: all move (the last step)
    assert not moving.view(n, 4, 4)[:, 3].any()
    # seeded: the same generator state gives the same movers
    assert torch.equal(big.movers(make_generator(5)), big.movers(make_generator(5)))
    with pytest.raises(TypeError, match="counted"):
        big.dense()


V, L, M = 2, 3, 4
GRAPH, NOISE = Absorbing(V), LogLinear(1e-3)


@pytest.fixture(scope="module")
def exact():
    return ExactScore(countdown_law(V, L), GRAPH, L)


def test_counted_sampler_samples_follow_its_exact_law(exact):
    """The whole counted lsd-c sampler: lsdd.sampling.exact's output law (counted_transition at every step) against the
    frequencies of 20,000 samples of the same sampler; and it differs from the independent-movers law."""
    g = torch.Generator().manual_seed(3)
    p = ConditionedParams(2, 0.6 * torch.randn(2, generator=g, dtype=torch.float64),
                          torch.randn(2, generator=g, dtype=torch.float64),
                          0.3 * torch.randn(2, generator=g, dtype=torch.float64), counted=True).requires_grad_(False)
    times = uniform_times(2)
    kw = dict(method=ConditionedRule(), coeffs=p.coeff_fn(GRAPH))
    ref, chi2, _ = sampler_law_vs_samples(exact, GRAPH, NOISE, times, L, kw)
    assert chi2 < 40.0, chi2
    p.counted = False
    indep = exact_sampler_law(exact, GRAPH, NOISE, times, L, method=ConditionedRule(), coeffs=p.coeff_fn(GRAPH))
    assert float((indep - ref).abs().sum()) > 0.02  # 0.034 here


def test_counted_euler_is_exact_when_there_are_no_more_tokens_than_steps(exact):
    """With L <= M and the true score, counted movers never unmask two tokens in one step (the expected count
    n / k stays <= 1 on the uniform grid), so the output law is the data law; independent movers are not."""
    data = countdown_law(V, L)
    real = (torch.arange(GRAPH.num_states ** L)[:, None] // GRAPH.num_states ** torch.arange(L - 1, -1, -1) %
            GRAPH.num_states < V).all(-1)
    times = uniform_times(M)
    counted = exact_sampler_law(exact, GRAPH, NOISE, times, L, method=ConditionedRule(),
                                coeffs=ConditionedParams(M, counted=True).coeff_fn(GRAPH))
    euler = exact_sampler_law(exact, GRAPH, NOISE, times, L)
    tv = lambda q: 0.5 * float((q.detach()[real] - data).abs().sum())  # noqa: E731
    assert tv(counted) < 1e-3 and tv(euler) > 0.02, (tv(counted), tv(euler))


def test_counted_artifact_round_trip_and_bad_values(exact, tmp_path):
    d = {"format": "lsdd-learned-sampler", "format_version": 2, "base": "euler", "graph": "absorbing",
         "num_tokens": V, "noise": NOISE.to_dict(), "times": [1.0, 0.5, 1e-5], "coeffs": [0.5, 1.0],
         "phi_mode": "linear", "provenance": {},
         "conditioning": {"feature": "confidence", "slope": [1.0, 0.0], "beta": [1.0, 1.0], "count": "rounded"}}
    s = Sampler.from_dict(d)  # a version-2 file: count "rounded" is counted movers, the slope is kept
    s.save(tmp_path / "c.json")
    back = Sampler.load(tmp_path / "c.json")
    assert back == s and back.movers == "counted" and back.conditioning["slope"] == [1.0, 0.0]
    law = exact_sampler_law(exact, GRAPH, NOISE, back.times_tensor(), L, **back.loop_args(GRAPH))
    # the same law as the conditioned rule built by hand from the file's numbers (what version 2 meant)
    params = ConditionedParams.from_count(2, "rounded", torch.tensor([0.5, 1.0], dtype=torch.float64).log(),
                                          torch.tensor([1.0, 0.0], dtype=torch.float64)).requires_grad_(False)
    ref = exact_sampler_law(exact, GRAPH, NOISE, back.times_tensor(), L, method=ConditionedRule("euler"),
                            coeffs=params.coeff_fn(GRAPH))
    assert torch.equal(law, ref)
    indep = exact_sampler_law(exact, GRAPH, NOISE, back.times_tensor(), L,
                              **Sampler.from_dict({**d, "conditioning": {**d["conditioning"],
                                                                         "count": "independent"}}
                                                  ).loop_args(GRAPH))
    assert float((law - indep).abs().sum()) > 0.02  # the field is read, not ignored (0.045 here)
    with pytest.raises(UserError, match="'count' must be one of"):
        Sampler.from_dict({**d, "conditioning": {**d["conditioning"], "count": "fixed"}})
    with pytest.raises(ValueError, match="--counted applies to --method lsd-c"):
        DistillConfig(counted=True).validate()


def test_feature_objective_pieces():
    from lsdd.distillation.objective import energy_distance, unigram_entropy

    x = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 2, 3]])
    assert torch.allclose(unigram_entropy(x, 5), torch.tensor([math.log(2), 0.0, math.log(4)], dtype=torch.float64))
    a, b = torch.zeros(7, 1), torch.full((5, 1), 3.0)
    assert energy_distance(a, b) == pytest.approx(6.0)  # point masses: 2 |delta|
    g = torch.Generator().manual_seed(0)
    u, v, w = (torch.randn(400, 2, generator=g, dtype=torch.float64) for _ in range(3))
    assert abs(energy_distance(u, v)) < 0.05 < energy_distance(u, w + 0.5)


def test_lsd_c_counted_fitted_on_features_end_to_end(exact, tmp_path):
    """--counted with --objective features: seeded, never worse than the base on its objective, and the artifact
    says its movers are counted."""
    from lsdd.distillation.distill import distill, to_sampler

    cfg = DistillConfig(nfe=M, teacher_nfe=16, num_traj=64, method="lsd-c", counted=True, objective="features",
                        obj_samples=64, cma_iters=2, cma_popsize=4, validation=False, early_exit=False)
    res = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    again = distill(exact, GRAPH, NOISE, L, cfg, progress=False)
    assert torch.equal(res.coeffs, again.coeffs) and res.conditioning == again.conditioning
    assert res.history[-1]["best_so_far"] <= res.history[0]["loss_phi"]
    art = to_sampler(res, cfg, None, {}, use_base=False)
    assert art.movers == "counted" and art.conditioning is not None and art.provenance["objective"] == "features"


def test_counted_count_comes_from_the_schedule_and_the_slope_only_orders():
    """Counted movers: the expected number of movers is the a_k = 0 one (phi_k alone), whatever the slope; the slope
    reweighs which tokens move (confident ones first for a_k > 0)."""
    from lsdd.sampling.steps import get_rule

    graph = Absorbing(3)
    x = torch.full((1, 3), graph.mask_id)
    score = torch.tensor([[[8.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 0.0, 1.0]]])  # confidences .8 .33 .75
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.45, dtype=torch.float64)
    base = get_rule("euler")(graph, NOISE, x, score, t, s, torch.tensor(1.3, dtype=torch.float64), "linear", False, None)
    for slope in (0.0, 3.0):
        p = ConditionedParams(1, torch.tensor([1.3]).log(), torch.tensor([slope]), torch.zeros(1), counted=True)
        law = ConditionedRule()(graph, NOISE, x, score, t, s, p.coeff_fn(graph)(0, x, score))
        assert isinstance(law, CountedLaw)
        assert torch.allclose(law.expected_count(), base.move.sum(-1))  # how many: phi_k only
        if slope:
            assert law.move[0, 0] > law.move[0, 2] > law.move[0, 1]  # which: the most confident weighs most


@pytest.mark.parametrize("flag,choice,says", [("--counted", "weight", "counted movers"),
                                              ("--spread", "spread", "spread along the sequence")])
def test_cli_sample_counted(tmp_path, capsys, flag, choice, says):
    """`lsdd sample --counted` / `--spread`: the same samples as the counted rule through the API (same seed),
    different from plain Euler's, also on a uniform-graph model; refused with one line for a two-call sampler or
    --learned."""
    import numpy as np

    from lsdd.cli import main
    from lsdd.models import load_model
    from lsdd.sampling.samplers import sample_batched
    from test_conditioned import _tiny_model

    model_dir = _tiny_model(tmp_path / "m", "absorbing")
    out = tmp_path / "c.npy"
    assert main(["sample", "--model", model_dir, "--steps", "4", flag, "--num", "16", "--seed", "3",
                 "--out", str(out)]) == 0
    assert says in capsys.readouterr().out
    model = load_model(model_dir)
    rule = ConditionedParams(4, counted=True, choice=choice).requires_grad_(False)
    want = sample_batched(model.score_fn, model.graph, model.noise, uniform_times(4), 16, model.config.length,
                          batch_size=64, seed=3, method=ConditionedRule(), coeffs=rule.coeff_fn(model.graph)).x
    assert np.array_equal(np.load(out), want.numpy())
    assert main(["sample", "--model", model_dir, "--steps", "4", "--num", "16", "--seed", "3",
                 "--out", str(tmp_path / "e.npy")]) == 0
    assert not np.array_equal(np.load(tmp_path / "e.npy"), np.load(out))
    uni = _tiny_model(tmp_path / "u", "uniform")  # on the uniform graph the movers are the tokens that change
    assert main(["sample", "--model", uni, "--steps", "4", flag, "--num", "16", "--seed", "3",
                 "--out", str(tmp_path / "u.npy")]) == 0
    umodel = load_model(uni)
    want = sample_batched(umodel.score_fn, umodel.graph, umodel.noise, uniform_times(4), 16, umodel.config.length,
                          batch_size=64, seed=3, method=ConditionedRule(), coeffs=rule.coeff_fn(umodel.graph)).x
    assert np.array_equal(np.load(tmp_path / "u.npy"), want.numpy())
    capsys.readouterr()
    for argv, msg in ((["--model", model_dir, flag, "--sampler", "theta-rk2"], "one-call samplers"),
                      (["--model", model_dir, flag, "--learned", "x.json"], "drop --steps")):
        assert main(["sample", *argv, "--out", str(tmp_path / "bad.npy")]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "bad.npy").exists()
