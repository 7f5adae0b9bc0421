
import pytest
import torch

from lsdd.sampling.exact import ExactScore, all_sequences, exact_sampler_law, seq_index
from lsdd.graphs import Absorbing, Ordinal, Uniform
from lsdd.noise import Geometric, LogLinear
from lsdd.sampling.samplers import euler_probs, sample, tweedie_probs
from lsdd.sampling.schedules import uniform_times

from conftest import countdown_law, toy_law

SETUPS = {
    "absorbing-loglinear": (Absorbing(3), LogLinear(1e-3)),
    "uniform-geometric": (Uniform(3), Geometric(1e-3, 8.0)),
    "ordinal-geometric": (Ordinal(3, bandwidth=1.0), Geometric(1e-3, 8.0)),
}


def data_tv(graph, law, p0, length):
    """TV between a law over all S^L states and the data law over N^L sequences."""
    states = all_sequences(graph.num_states, length)
    real = (states < graph.num_tokens).all(-1)
    out = torch.zeros_like(p0)
    out.index_add_(0, seq_index(states[real], graph.num_tokens), law[real])
    return 0.5 * (out - p0).abs().sum().item() + 0.5 * law[~real].sum().item()


def rand_state(graph, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, graph.num_states, shape, generator=g)
    score = torch.rand(*shape, graph.num_states, dtype=torch.float64, generator=g)
    return x, score.scatter(-1, x[..., None], 1.0)


def test_euler_absorbing_formula():
    graph, noise = SETUPS["absorbing-loglinear"]
    x, score = rand_state(graph, (2, 6))
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    p = euler_probs(graph, noise, x, score, t, s, coeff=0.7)
    m = x == graph.mask_id
    # masked token: p(y) = dt sigma(t) Phi s_y for real y, p(mask) = 1 - sum; real tokens stay
    real = 0.1 * noise.rate(t) * 0.7 * score[m][:, :3]
    torch.testing.assert_close(p[m][:, :3], real)
    torch.testing.assert_close(p[m][:, 3], 1 - real.sum(-1))
    torch.testing.assert_close(p[~m], torch.nn.functional.one_hot(x[~m], 4).double())


def test_tweedie_absorbing_formula_and_log_mode():
    graph, noise = SETUPS["absorbing-loglinear"]
    x, score = rand_state(graph, (2, 6), seed=1)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.45, dtype=torch.float64)
    p = tweedie_probs(graph, noise, x, score, t, s, coeff=1.3, mode="log")
    m = x == graph.mask_id
    dsig = noise.total(t) - noise.total(s)
    # masked token: p(y) = (e^{dsigma} - 1) s_y^Phi for real y (log mode: log-scores times Phi)
    real = torch.expm1(dsig) * score[m][:, :3] ** 1.3
    torch.testing.assert_close(p[m][:, :3], real)
    torch.testing.assert_close(p[m][:, 3], 1 - real.sum(-1))


def test_tweedie_uniform_formula():
    graph, noise = SETUPS["uniform-geometric"]
    x, score = rand_state(graph, (3, 4), seed=2)
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    p = tweedie_probs(graph, noise, x, score, t, s, coeff=0.9)
    d = noise.total(t) - noise.total(s)
    n = 3
    sc = score * 0.9
    sc = sc.scatter(-1, x[..., None], 1.0)  # Phi multiplies only the off-diagonal scores
    stag = torch.exp(d) * sc + (1 - torch.exp(d)) / n * sc.sum(-1, keepdim=True)
    back = torch.exp(-d) * torch.nn.functional.one_hot(x, n) + (1 - torch.exp(-d)) / n
    ref = stag * back
    ref = ref.clamp_min(0)
    torch.testing.assert_close(p, ref / ref.sum(-1, keepdim=True))


def test_euler_uniform_clips_negative_stay():
    graph, noise = SETUPS["uniform-geometric"]
    x, score = rand_state(graph, (1, 5), seed=3)
    score = score * 1e3
    score = score.scatter(-1, x[..., None], 1.0)
    p = euler_probs(graph, noise, x, score, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    # a huge step: the stay mass would be negative; it is clipped to 0 and the row renormalised, so the
    # off-diagonal masses are the scores over their sum
    assert (p.gather(-1, x[..., None]) == 0).all()
    off = score.scatter(-1, x[..., None], 0.0)
    torch.testing.assert_close(p, off / off.sum(-1, keepdim=True))


@pytest.mark.parametrize("name", SETUPS)
def test_one_tweedie_step_gives_exact_marginal(name):
    # L = 1 with the exact score: one Tweedie step t -> s yields exactly the marginal p_s
    graph, noise = SETUPS[name]
    p0 = toy_law(3, 1)
    exact = ExactScore(p0, graph, 1)
    t, s = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    states = torch.arange(graph.num_states)[:, None]
    p_t = exact.marginal(states, noise.total(t).expand(graph.num_states))
    p_s = exact.marginal(states, noise.total(s).expand(graph.num_states))
    probs = tweedie_probs(graph, noise, states, exact(states, noise.total(t).expand(graph.num_states)), t, s)
    torch.testing.assert_close(p_t @ probs[:, 0, :], p_s)


@pytest.mark.parametrize("name", SETUPS)
def test_exact_score_many_steps_reproduces_data(name):
    graph, noise = SETUPS[name]
    length = 2
    p0 = countdown_law(3, length) if graph.absorbing else toy_law(3, length)
    exact = ExactScore(p0, graph, length)
    tvs = {}
    for method in ("euler", "tweedie"):
        for m in (4, 16, 256):
            law = exact_sampler_law(exact, graph, noise, uniform_times(m, eps=1e-3), length, method=method)
            # no output mass is left on a sequence that still holds a mask
            if graph.absorbing:
                states = all_sequences(graph.num_states, length)
                assert law[(states == graph.mask_id).any(-1)].sum() < 1e-12
            tvs[method, m] = data_tv(graph, law, p0, length)
    for method in ("euler", "tweedie"):
        # the error shrinks with the step count, and 256 steps are close to the data law
        assert tvs[method, 256] < tvs[method, 16] < tvs[method, 4]
        assert tvs[method, 256] < 0.02, tvs


def test_euler_equals_tweedie_absorbing_loglinear_only():
    # e^{d sigma_bar} - 1 = dt sigma(t) exactly for log-linear noise, so the two samplers coincide
    graph, noise = SETUPS["absorbing-loglinear"]
    exact = ExactScore(countdown_law(3, 2), graph, 2)
    times = uniform_times(5, eps=1e-3)
    law_e = exact_sampler_law(exact, graph, noise, times, 2, method="euler")
    law_t = exact_sampler_law(exact, graph, noise, times, 2, method="tweedie")
    torch.testing.assert_close(law_e, law_t, rtol=1e-10, atol=1e-12)
    graph, noise = SETUPS["uniform-geometric"]
    exact = ExactScore(toy_law(3, 2), graph, 2)
    law_e = exact_sampler_law(exact, graph, noise, times, 2, method="euler")
    law_t = exact_sampler_law(exact, graph, noise, times, 2, method="tweedie")
    assert (law_e - law_t).abs().sum() > 1e-3


@pytest.mark.parametrize("name", SETUPS)
@pytest.mark.parametrize("method", ["euler", "tweedie"])
@pytest.mark.parametrize("mode", ["linear", "log"])
def test_unit_coeffs_bit_identical_and_seeded(name, method, mode):
    graph, noise = SETUPS[name]
    exact = ExactScore(toy_law(3, 3), graph, 3)
    times = uniform_times(6)
    base = sample(exact, graph, noise, times, (64, 3), method=method, generator=torch.Generator().manual_seed(5))
    ones = sample(exact, graph, noise, times, (64, 3), method=method, coeffs=torch.ones(6, dtype=torch.float64),
                  phi_mode=mode, generator=torch.Generator().manual_seed(5))
    other = sample(exact, graph, noise, times, (64, 3), method=method, generator=torch.Generator().manual_seed(6))
    scaled = sample(exact, graph, noise, times, (64, 3), method=method, coeffs=torch.full((6,), 2.5, dtype=torch.float64),
                    phi_mode=mode, generator=torch.Generator().manual_seed(5))
    # all-ones coefficients reproduce the base sampler bit for bit; same seed, same output
    assert torch.equal(base.x, ones.x)
    assert not torch.equal(base.x, other.x)
    # and the coefficients are not ignored
    assert not torch.equal(base.x, scaled.x)
    # M steps cost exactly M network calls, and no mask survives
    assert base.nfe == 6
    assert (base.x < graph.num_tokens).all()


def test_sampled_frequencies_match_exact_law():
    graph, noise = SETUPS["absorbing-loglinear"]
    p0 = countdown_law(3, 2)
    exact = ExactScore(p0, graph, 2)
    times = uniform_times(3, eps=1e-3)
    law = exact_sampler_law(exact, graph, noise, times, 2, method="euler")
    out = sample(exact, graph, noise, times, (20_000, 2), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(seq_index(out.x, graph.num_states), minlength=law.numel()).double() / 20_000
    # Monte Carlo frequencies of the real sampler agree with its exact law
    assert (freq - law).abs().max() < 0.012


def test_bad_grid_and_coeffs_rejected():
    graph, noise = SETUPS["absorbing-loglinear"]
    exact = ExactScore(toy_law(3, 1), graph, 1)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(exact, graph, noise, torch.tensor([1.0, 0.5, 0.6, 0.1]), (2, 1))
    with pytest.raises(ValueError, match="coeffs must have shape"):
        sample(exact, graph, noise, uniform_times(4), (2, 1), coeffs=torch.ones(3))
    with pytest.raises(ValueError, match="positive integer"):
        uniform_times(0)


@pytest.mark.parametrize("setup", ["absorbing-loglinear", "uniform-geometric"])
def test_tempered_counted_score_is_fed_noise_levels_and_counted(setup):
    """tempered_score over a CountedScore tempers inside the count: the model still sees sigma_bar(t) (a plain
    wrapper around it was fed sigma_bar(sigma_bar(t)), NaN on log-linear noise: the nll@entropy fit's frontier
    slope came from such draws until stop 32), and its calls count in the wrapped CountedScore."""
    from lsdd.sampling.loop import CountedScore
    from lsdd.sampling.samplers import tempered_score

    graph, noise = SETUPS[setup]
    exact = ExactScore(toy_law(graph.num_tokens, 3), graph, 3)
    seen = []

    def score(x, sigma):
        seen.append(sigma)
        return exact(x, sigma)

    times = uniform_times(4)
    counted = CountedScore(score, graph, noise)
    a = sample(tempered_score(counted, 0.7), graph, noise, times, (64, 3), generator=torch.Generator().manual_seed(3))
    b = sample(tempered_score(exact, 0.7), graph, noise, times, (64, 3), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x, b.x) and counted.calls == a.nfe == 4
    sigmas = torch.stack([s[0].double() for s in seen])
    want = torch.stack([noise.total(t) for t in times[:-1]]).to(sigmas.dtype)
    assert torch.isfinite(sigmas).all() and torch.allclose(sigmas, want, rtol=1e-5)
    from lsdd.sampling.loop import ScoreContractError

    with pytest.raises(ScoreContractError, match="outside"):  # the old mistake is refused at the first step
        sample(lambda x, t: counted(x, t), graph, noise, times, (4, 3), generator=torch.Generator().manual_seed(3))
