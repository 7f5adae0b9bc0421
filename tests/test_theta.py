"""theta-RK-2 and theta-trapezoidal (lsdd.sampling.theta): convergence order on exact toys (output laws by enumeration,
not samples), one step against the formulas written out by hand, draws against the exact law, NFE counting,
and errors."""

import math

import pytest
import torch

from lsdd.sampling.draws import RowStreams, TwoStageLaw, make_generator
from lsdd.errors import ScoreContractError
from lsdd.sampling.exact import ExactScore, exact_reverse_law, exact_sampler_law, seq_index
from lsdd.graphs import Absorbing, Ordinal, Uniform
from lsdd.sampling.loop import CountedScore, reverse_loop
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.samplers import sample
from lsdd.sampling.schedules import uniform_times
from lsdd.sampling.steps import get_rule
from lsdd.sampling.theta import ThetaRK2, ThetaTrapezoidal

ABS, LOGLIN = Absorbing(3), LogLinear(1e-3)
UNI, GEO = Uniform(3), Geometric(1e-3, 8.0)


def mild_law(num_values: int, length: int, spread: float = 0.3, seed: int = 0) -> torch.Tensor:
    """A full-support data law with mild dependence between tokens, (V^L,) float64."""
    g = torch.Generator().manual_seed(seed)
    p = torch.exp(spread * torch.randn(num_values**length, generator=g, dtype=torch.float64))
    return p / p.sum()


def slopes(graph, noise, length, eps, steps, method):
    """log2 of the output-law TV error ratio per doubling of the steps."""
    exact = ExactScore(mild_law(graph.num_tokens, length), graph, length)
    ref = exact_reverse_law(exact, noise, eps)
    errs = [float((exact_sampler_law(exact, graph, noise, uniform_times(m, eps), length, method=method) - ref)
                  .abs().sum() / 2) for m in steps]
    return [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])], errs


@pytest.mark.parametrize("graph,noise,eps,steps", [(ABS, LOGLIN, 1e-5, [16, 32, 64]),
                                                   (UNI, GEO, 1e-3, [16, 32, 64, 128])], ids=["absorbing", "uniform"])
def test_trapezoidal_is_second_order_where_euler_is_first(graph, noise, eps, steps):
    euler, e_err = slopes(graph, noise, 2, eps, steps, "euler")
    trap, t_err = slopes(graph, noise, 2, eps, steps, "theta-trapezoidal")
    rk2, _ = slopes(graph, noise, 2, eps, steps, "theta-rk2")
    # Euler's error halves per doubling of the steps (slope ~1); measured 1.00 / 1.01-1.08
    assert all(0.85 < v < 1.2 for v in euler), euler
    # theta-trapezoidal's falls ~4x (slope ~2): measured 1.70-1.75 on the absorbing toy (the rates ~1/t near
    # t = 0 add a log factor: h^2 log(1/h)) and 1.83-1.99 on the uniform one - a clear separation from Euler
    assert min(trap) > 1.6 and min(trap) - max(euler) > 0.5, (trap, euler)
    # ... and it is far more accurate at equal NFE (2 calls per step): half its steps beat Euler's
    assert t_err[0] < e_err[1] / 3, (t_err, e_err)
    # theta-RK-2, transcribed per token, stays first order (measured slopes 1.00 / 1.04-1.32): its final jump is
    # drawn from x for all tokens at once, so two tokens moving in one step are drawn independently (an O(h^2)
    # error per step in their joint law) - see the module docstring of lsdd.sampling.theta
    assert all(v < 1.5 for v in rk2), rk2


def test_ordinal_graph_converges_to_the_exact_reverse_law():
    # the ordinal graph (rates Q(y -> x) that depend on y) through every rule: the exact-score output law tends to
    # the exact reverse process's law; measured slopes: Euler 1.03 / 1.02, Tweedie 1.00 / 1.00,
    # theta-trapezoidal 1.99 / 2.03
    ordinal = Ordinal(3, bandwidth=1.0)
    euler, e_err = slopes(ordinal, GEO, 2, 1e-3, [32, 64, 128], "euler")
    tweedie, _ = slopes(ordinal, GEO, 2, 1e-3, [32, 64, 128], "tweedie")
    trap, t_err = slopes(ordinal, GEO, 2, 1e-3, [32, 64, 128], "theta-trapezoidal")
    assert all(0.85 < v < 1.2 for v in euler + tweedie), (euler, tweedie)
    assert min(trap) > 1.8, trap
    assert e_err[-1] < 2e-3 and t_err[-1] < 1e-4, (e_err, t_err)


def test_one_step_laws_match_the_formulas_written_out():
    # L = 1, uniform graph: one step t -> s from every start state, computed by hand from the rates
    n, t, s, th = 3, torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64), 0.4
    exact = ExactScore(mild_law(n, 1, spread=1.0), UNI, 1)
    h, rho = float(t - s), float(t - th * (t - s))

    def rates(x, time):  # R(x -> y) = sigma(t) / N * s_y, y != x
        tt = torch.tensor(time, dtype=torch.float64)
        sc = exact(torch.tensor([[x]]), GEO.total(tt).reshape(1))[0, 0]
        r = GEO.rate(tt) / n * sc
        r[x] = 0.0
        return r

    a1, a2 = 1 / (2 * th * (1 - th)), ((1 - th) ** 2 + th**2) / (2 * th * (1 - th))
    for x in range(n):
        r1 = rates(x, float(t))
        p1 = (1 - math.exp(-th * h * float(r1.sum()))) * r1 / r1.sum()
        p1[x] = 1 - p1.sum()
        trap = torch.zeros(n, dtype=torch.float64)
        for k in range(n):  # stage 2 from k with [a1 R(k, rho) - a2 R(x, t) (only if k == x)]_+
            comb = (a1 * rates(k, rho) - (a2 * r1 if k == x else 0.0)).clamp_min(0.0)
            p2 = (1 - math.exp(-(1 - th) * h * float(comb.sum()))) * comb / max(float(comb.sum()), 1e-300)
            p2[k] = 1 - p2.sum()
            trap += p1[k] * p2
        rk2 = torch.zeros(n, dtype=torch.float64)
        q1 = min(1.0, th * h * float(r1.sum())) * r1 / r1.sum()  # a linear clock, capped at 1
        q1[x] = 1 - q1.sum()
        for k in range(n):  # final from x with [(1 - 1/(2 th)) R(x, t) + 1/(2 th) R(k, rho) (only if k == x)]_+
            comb = ((1 - 1 / (2 * th)) * r1 + (rates(k, rho) / (2 * th) if k == x else 0.0)).clamp_min(0.0)
            p2 = min(1.0, h * float(comb.sum())) * comb / max(float(comb.sum()), 1e-300)
            p2[x] = 1 - p2.sum()
            rk2 += q1[k] * p2
        x0 = torch.tensor([[x]])
        for rule, want in ((ThetaTrapezoidal(th), trap), (ThetaRK2(th), rk2)):
            # the loop's exact propagation of one step (a 2-point grid needs t = 1, so drive the rule directly)
            law = rule(UNI, GEO, x0, exact(x0, GEO.total(t).reshape(1)), t, s, call=CountedScore(exact, UNI, GEO))
            assert isinstance(law, TwoStageLaw)
            first = law.first.dense()[:, 0]  # (1, S)
            mids = torch.arange(n)[:, None]
            second = law.finish(mids, torch.zeros(n, dtype=torch.long)).dense()[:, 0]  # (S, S)
            got = (first.T * second).sum(0)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)  # the counted call passes sigma in float32


@pytest.mark.parametrize("method,graph,noise", [("theta-trapezoidal", ABS, LOGLIN), ("theta-rk2", UNI, GEO)],
                         ids=["trapezoidal-absorbing", "rk2-uniform"])
def test_draws_follow_the_exact_law(method, graph, noise):
    exact = ExactScore(mild_law(3, 2, spread=1.0), graph, 2)
    times = uniform_times(3, eps=1e-3)
    law = exact_sampler_law(exact, graph, noise, times, 2, method=method)
    other = exact_sampler_law(exact, graph, noise, times, 2, method="euler")
    n = 10000
    out = sample(exact, graph, noise, times, (n, 2), method=method, generator=make_generator(0))
    # 3 steps of a two-call rule: 6 network calls, counted by the loop
    assert out.nfe == 6
    freq = torch.bincount(seq_index(out.x, graph.num_states), minlength=law.numel()).double() / n
    # the two-stage draw (x_mid, then the final state) has the law that exact propagation computes: chi-square
    # over the states of positive probability (15 or 8 degrees of freedom; the 1e-6 quantile is below 60)
    live = law > 0
    chi2 = float((n * (freq[live] - law[live]) ** 2 / law[live]).sum())
    assert chi2 < 60 and float(freq[~live].sum()) == 0.0, chi2
    # and that test can tell this law from Euler's
    assert float((n * (freq[live] - other[live]) ** 2 / other[live].clamp_min(1e-12)).sum()) > 100
    if graph.absorbing:  # the last step unmasks every token
        assert not (out.x == graph.mask_id).any()


def test_nfe_counted_and_chunks_independent():
    exact = ExactScore(mild_law(3, 3), UNI, 3)
    counted = CountedScore(exact, UNI, GEO)
    reverse_loop(counted, UNI, GEO, uniform_times(4), UNI.sample_limit(5, 3, generator=make_generator(1)),
                 rule="theta-trapezoidal", generator=make_generator(0))
    # 4 steps x 2 calls: 8 NFE, so "8 NFE" is 4 steps
    assert counted.calls == 8
    streams = lambda ids, sizes: RowStreams([make_generator(0, "cpu", i) for i in ids], sizes)  # noqa: E731
    alone = sample(exact, UNI, GEO, uniform_times(4), (4, 3), method="theta-rk2", generator=streams([0], [4]))
    both = sample(exact, UNI, GEO, uniform_times(4), (9, 3), method="theta-rk2", generator=streams([0, 1], [4, 5]))
    # a chunk's samples do not depend on its neighbours, also through the second call
    assert torch.equal(both.x[:4], alone.x)


def test_theta_option_and_errors():
    assert get_rule("theta-rk2").theta == 0.5 and get_rule("theta-trapezoidal", 0.3).theta == 0.3
    with pytest.raises(ValueError, match="0 < theta < 1"):
        ThetaTrapezoidal(1.0)
    with pytest.raises(ValueError, match="0 < theta <= 1"):
        ThetaRK2(0.0)
    with pytest.raises(ValueError, match="theta applies to"):
        get_rule("euler", 0.5)
    exact = ExactScore(mild_law(3, 2), ABS, 2)
    x = ABS.sample_limit(2, 2)
    with pytest.raises(ValueError, match="linear Phi only"):
        sample(exact, ABS, LOGLIN, uniform_times(2), (2, 2), method="theta-rk2", phi_mode="log",
               coeffs=torch.ones(2, dtype=torch.float64))
    law = ThetaRK2()(ABS, LOGLIN, x, exact(x, torch.ones(2)), torch.tensor(1.0), torch.tensor(0.5),
                     call=CountedScore(exact, ABS, LOGLIN))
    with pytest.raises(TypeError, match="mixture over its intermediate state"):
        law.dense()
    calls = []

    def broken(x, sigma):  # NaN on the second call of step 1 (the 4th call)
        calls.append(1)
        return exact(x, sigma) * (float("nan") if len(calls) == 4 else 1.0)

    with pytest.raises(ScoreContractError, match=r"step 1 \(second call, t=0\.5.*NaN or infinite"):
        sample(broken, ABS, LOGLIN, uniform_times(3, eps=1e-3), (4, 2), method="theta-trapezoidal",
               generator=make_generator(0))
