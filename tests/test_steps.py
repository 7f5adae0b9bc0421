"""The factorised step laws (lsdd.sampling.steps) and the two-stage draw (lsdd.sampling.draws) against the dense reference
laws (samplers.euler_probs / tweedie_probs), in probabilities, on small random cases."""

import pytest
import torch

from lsdd.sampling.draws import StepLaw, inverse_cdf, sample_categorical
from lsdd.graphs import Absorbing, Ordinal, Uniform
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.samplers import REFERENCE_PROBS
from lsdd.sampling.steps import get_rule

SETUPS = {
    "absorbing-loglinear": (Absorbing(4), LogLinear(1e-3)),
    "absorbing-geometric": (Absorbing(4), Geometric(1e-3, 6.0)),
    "uniform-geometric": (Uniform(4), Geometric(1e-3, 6.0)),
    "uniform-loglinear": (Uniform(4), LogLinear(1e-3)),
    "ordinal-geometric": (Ordinal(4), Geometric(1e-3, 6.0)),
}


def rand_case(graph, shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, graph.num_states, shape, generator=g)
    score = scale * torch.rand(*shape, graph.num_states, dtype=torch.float64, generator=g) ** 3
    score[..., 0] = 0.0 if graph.num_states > 2 else score[..., 0]  # a zero-score column
    return x, score.scatter(-1, x[..., None], 1.0)


@pytest.mark.parametrize("name", SETUPS)
@pytest.mark.parametrize("method", ["euler", "tweedie"])
@pytest.mark.parametrize("mode", ["linear", "log"])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("interval", [(0.62, 0.55), (0.9, 0.2)])  # a small step, and one that saturates
def test_factorised_law_equals_reference(name, method, mode, last, interval):
    graph, noise = SETUPS[name]
    for seed, scale in [(0, 1.0), (1, 30.0)]:
        x, score = rand_case(graph, (3, 7), seed, scale)
        t, s = (torch.tensor(v, dtype=torch.float64) for v in interval)
        ref = REFERENCE_PROBS[method](graph, noise, x, score, t, s, 0.7, mode, last)
        law = get_rule(method)(graph, noise, x, score, t, s, 0.7, mode, last, None)
        # the two-stage factorisation describes exactly the reference law
        torch.testing.assert_close(law.dense(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["absorbing-loglinear", "uniform-geometric", "ordinal-geometric"])
def test_state_dependent_coefficients(name):
    graph, noise = SETUPS[name]
    x, score = rand_case(graph, (2, 5), 3)
    phi = torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) + 0.2
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    for method in ("euler", "tweedie"):
        law = get_rule(method)(graph, noise, x, score, t, s, phi, "linear", False, None).dense()
        # a (B, L) coefficient acts row by row: each row equals the reference law with that row's scalar
        for b in range(2):
            for i in range(5):
                ref = REFERENCE_PROBS[method](graph, noise, x[b:b + 1, i:i + 1], score[b:b + 1, i:i + 1], t, s,
                                              float(phi[b, i]))
                torch.testing.assert_close(law[b, i], ref[0, 0], rtol=1e-10, atol=1e-12)


def test_log_mode_is_normalised_in_log_space():
    graph, noise = SETUPS["absorbing-loglinear"]
    x = torch.full((1, 2), graph.mask_id)
    score = torch.tensor([[[1e30, 1e29, 1.0, 1e-30, 1.0], [1e-40, 3e-40, 1e-45, 0.0, 1.0]]], dtype=torch.float64)
    t, s = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    for last in (False, True):
        law = get_rule("euler")(graph, noise, x, score, t, s, 12.0, "log", last, None).dense()
        # s^12 overflows float64 (1e360) and underflows (1e-480); in log space the law is still finite
        assert torch.isfinite(law).all()
        torch.testing.assert_close(law.sum(-1), torch.ones(1, 2, dtype=torch.float64))
        # row 0: unmasking is certain and the largest score wins by 10^12 : 1
        assert law[0, 0, 0] > 0.999999
        # row 1: tiny scores give a tiny unmask probability (not a fallback to uniform), except on the last step,
        # where the value law follows the scores' ratios: (3e-40)^12 dominates (1e-40)^12 by 3^12
        if last:
            torch.testing.assert_close(law[0, 1, 1] / law[0, 1, 0], torch.tensor(3.0**12, dtype=torch.float64))
            assert law[0, 1, 3] == 0 and law[0, 1, 4] == 0
        else:
            # (mass 1e-480 before the step factor: it stays masked, exactly as in exact arithmetic to float64)
            assert law[0, 1, 4] == 1.0


def test_two_stage_draw_frequencies_match_law():
    graph, noise = SETUPS["absorbing-loglinear"]
    x, score = rand_case(graph, (2, 3), 5)
    x[0] = graph.mask_id
    t, s = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    law = get_rule("euler")(graph, noise, x, score, t, s, 1.3, "linear", False, None)
    n = 40_000
    big = StepLaw(x.repeat(n, 1), law.move.repeat(n, 1), law.weights.repeat(n, 1, 1), law.fallback)
    draws = big.draw(torch.Generator().manual_seed(0)).view(n, 2, 3)
    freq = torch.nn.functional.one_hot(draws, graph.num_states).double().mean(0)
    # Monte Carlo frequencies of the two-stage draw agree with the dense law (4 sigma of a binomial)
    dense = law.dense()
    assert ((freq - dense).abs() <= 4 * (dense * (1 - dense) / n).sqrt() + 1e-9).all()


def test_blocked_inverse_cdf_equals_flat_search():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(300, 5000, generator=g) ** 8
    w[:, 1000:2100] = 0.0  # a whole empty block and parts of two others
    u = torch.rand(300, generator=g, dtype=torch.float64)
    flat = inverse_cdf(w, u, block=10_000)
    blocked = inverse_cdf(w, u, block=1024)
    # the two-level search returns the same index as one float64 cumulative sum, except where u lands within
    # float32 rounding of a boundary; and never an index of zero weight
    assert (flat != blocked).float().mean() < 0.01
    assert (w.gather(1, blocked[:, None]) > 0).all()


def test_sample_categorical_never_draws_zero_mass():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    idx = sample_categorical(probs.expand(5000, 2, 4), torch.Generator().manual_seed(0))
    assert set(idx[:, 0].tolist()) == {1, 3}
    assert (idx[:, 1] == 3).all()
    # frequencies follow the weights
    assert abs((idx[:, 0] == 1).double().mean().item() - 0.5) < 0.03
