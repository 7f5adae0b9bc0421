import pytest
import torch

from lsdd.sampling.exact import ExactScore
import math

from lsdd.graphs import Absorbing, Ordinal, Uniform, make_graph

from conftest import toy_law

GRAPHS = [Absorbing(3), Uniform(3), Ordinal(3, bandwidth=1.0)]


def full_q(graph):
    """The rate matrix Q[a, b] = rate of a -> b, (S, S) float64, written out by hand (not from the graph's code).

    Absorbing(3): states 0, 1, 2 and the mask 3; each real token jumps to the mask at rate 1, the mask stays.
    Uniform(3): each token jumps to each of the 3 tokens at rate 1/3 (so to each other one at rate 1/3).
    Ordinal(3, bandwidth 1): a -> b at rate k(|a - b|) / gap with k(d) = exp(-d^2 / 2); the eigenvalues of -Q
    before scaling are 0, k1 + 2 k2 (eigenvector (1, 0, -1)) and 3 k1 (eigenvector (1, -2, 1)), so the gap is
    min(k1 + 2 k2, 3 k1) = k1 + 2 k2.
    """
    if graph.name == "ordinal":
        k1, k2 = math.exp(-0.5), math.exp(-2.0)
        gap = min(k1 + 2 * k2, 3 * k1)
        return torch.tensor([[-(k1 + k2), k1, k2],
                             [k1, -2 * k1, k1],
                             [k2, k1, -(k1 + k2)]], dtype=torch.float64) / gap
    if graph.absorbing:
        return torch.tensor([[-1.0, 0.0, 0.0, 1.0],
                             [0.0, -1.0, 0.0, 1.0],
                             [0.0, 0.0, -1.0, 1.0],
                             [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    third = 1.0 / 3.0
    return torch.tensor([[-2 * third, third, third],
                         [third, -2 * third, third],
                         [third, third, -2 * third]], dtype=torch.float64)


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_rate_into_is_column_of_q(graph):
    q = full_q(graph)
    for b in range(graph.num_states):
        # rate_into(x)[y] = Q(y -> x) for y != x, and 0 at y = x
        expected = q[:, b].clone()
        expected[b] = 0.0
        torch.testing.assert_close(graph.rate_into(torch.tensor([[b]]))[0, 0], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_transition_is_matrix_exponential(graph):
    q = full_q(graph)
    sigma = torch.tensor([0.3, 1.7], dtype=torch.float64)
    states = torch.arange(graph.num_states)
    for b, sig in enumerate(sigma):
        expm = torch.linalg.matrix_exp(sig * q)
        x0 = states[None].expand(1, -1)
        # row a of exp(sigma Q) is the law of x_t given x_0 = a
        torch.testing.assert_close(graph.transition(x0, sig[None])[0], expm)
        # transp_transition(x) lists P(x | y) over y: column x of exp(sigma Q)
        torch.testing.assert_close(graph.transp_transition(x0, sig[None])[0], expm.T)


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_staggered_score_is_inverse_transition(graph):
    q = full_q(graph)
    d = torch.tensor([0.4], dtype=torch.float64)
    score = torch.rand(1, 2, graph.num_states, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # staggered_y = sum_b s_b exp(-d Q)[b, y]
    torch.testing.assert_close(graph.staggered_score(score, d), score @ torch.linalg.matrix_exp(-d * q))


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_reverse_rate_rows(graph):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, graph.num_states, (4, 5), generator=g)
    score = torch.rand(4, 5, graph.num_states, dtype=torch.float64, generator=g)
    r = graph.reverse_rate(x, score)
    # off the diagonal R(x -> y) = Q(y -> x) s_y (reverse rate of the CTMC); the diagonal makes rows sum to 0
    q = full_q(graph)
    expected = q.T[x] * score  # q.T[x][..., y] = Q(y -> x)
    expected = expected.scatter(-1, x[..., None], 0.0)
    expected = expected.scatter(-1, x[..., None], -expected.sum(-1, keepdim=True))
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(r.sum(-1), torch.zeros(4, 5, dtype=torch.float64))


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_sample_transition_frequencies(graph):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 100_000), 1, dtype=torch.long)
    sigma = torch.tensor([0.7], dtype=torch.float64)
    xt = graph.sample_transition(x0, sigma, g)
    freq = torch.bincount(xt[0], minlength=graph.num_states).double() / xt.numel()
    # empirical frequencies match the transition law (5 sigma of a binomial at n = 1e5)
    assert (freq - graph.transition(x0[:, :1], sigma)[0, 0]).abs().max() < 0.008


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_score_entropy_minimised_by_exact_score(graph):
    length, p0 = 2, toy_law(3, 2)
    exact = ExactScore(p0, graph, length)
    sigma = torch.tensor([0.8], dtype=torch.float64)
    # enumerate (x0, x_t) with weights p0(x0) P(x_t | x0)
    data = exact.data
    states = torch.cartesian_prod(*[torch.arange(graph.num_states)] * length)
    trans = graph.transition(data, sigma.expand(data.shape[0]))  # (K0, L, S)
    w = p0[:, None] * trans[:, torch.arange(length)[None], states].prod(-1)  # (K0, Kt)
    keep = w > 0
    i0, it = keep.nonzero(as_tuple=True)
    x0, xt, wt = data[i0], states[it], w[keep]
    # one log-score table per noisy state, shared by every x0 that reaches it
    true_log = exact(states, sigma.expand(states.shape[0])).clamp_min(1e-300).log()

    def expected_loss(log_table):
        loss = graph.score_entropy(log_table[it], sigma.expand(xt.shape[0]), xt, x0).sum(-1)
        return (wt * loss).sum()

    base = expected_loss(true_log)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        noise = 0.3 * torch.randn(true_log.shape, generator=g, dtype=torch.float64)
        # any perturbation of the exact score raises the expected loss
        assert expected_loss(true_log + noise) > base
    # and the gradient vanishes at the exact score (on entries that enter the loss)
    log_s = true_log.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(expected_loss(log_s), log_s)
    assert grad.abs().max() < 1e-9


def test_make_graph_errors():
    u, a = make_graph("uniform", 4), make_graph("absorbing", 4)
    assert isinstance(u, Uniform) and (u.num_tokens, u.num_states) == (4, 4)
    assert isinstance(a, Absorbing) and (a.num_tokens, a.num_states, a.mask_id) == (4, 5, 4)
    with pytest.raises(ValueError, match=r"unknown graph 'foo'; expected one of \['absorbing', 'ordinal', 'uniform'\]"):
        make_graph("foo", 4)
    with pytest.raises(ValueError, match="num_tokens must be >= 1, got 0"):
        Absorbing(0)
    with pytest.raises(ValueError, match="needs num_tokens >= 2, got 1"):
        Uniform(1)


def test_limit_and_movable():
    g = torch.Generator().manual_seed(0)
    a = Absorbing(3)
    # the absorbing limit is all mask, and only masked positions can move
    assert torch.equal(a.sample_limit(2, 4, g), torch.full((2, 4), 3))
    assert a.movable(torch.tensor([[0, 3, 2, 3]])).tolist() == [[False, True, False, True]]
    # the uniform limit is uniform over the tokens, and every position can move
    u = Uniform(3)
    x = u.sample_limit(1000, 30, g)
    freq = torch.bincount(x.flatten(), minlength=3).double() / x.numel()
    assert x.min() == 0 and x.max() == 2 and (freq - 1 / 3).abs().max() < 0.01
    assert u.movable(x[:2]).all()


def test_ordinal_kernel_is_symmetric_with_uniform_limit():
    g = Ordinal(17)
    # the digits' 17 levels: bandwidth N / 8, Q symmetric with rows summing to 0, and nearer levels get more rate
    assert g.bandwidth == 17 / 8
    torch.testing.assert_close(g.q, g.q.T, rtol=0, atol=0)
    torch.testing.assert_close(g.q.sum(1), torch.zeros(17, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (g.q[8, 9] > g.q[8, 10] > g.q[8, 12] > g.q[8, 16] > 0).item()
    # the slowest mode decays like e^{-sigma}: spectral gap of -Q is 1
    ev = torch.linalg.eigvalsh(-g.q)
    assert abs(float(ev[0])) < 1e-12 and abs(float(ev[1]) - 1.0) < 1e-12
    # exp(sigma Q) keeps the uniform law, and sigma = 20 (the geometric schedule's end) reaches it from any level
    x0 = torch.arange(17)[None]
    p = g.transition(x0, torch.tensor([0.7], dtype=torch.float64))[0]
    torch.testing.assert_close(p.sum(0), torch.ones(17, dtype=torch.float64))
    far = g.transition(x0, torch.tensor([20.0], dtype=torch.float64))[0]
    assert (far - 1 / 17).abs().max() < 1e-8
    with pytest.raises(ValueError, match="needs num_tokens >= 2, got 1"):
        Ordinal(1)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        Ordinal(5, bandwidth=0.0)


def test_ordinal_staggered_score_caps_the_fast_modes():
    g = Ordinal(17)
    score = torch.rand(2, 3, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    small, large = torch.tensor([0.2, 0.2], dtype=torch.float64), torch.tensor([15.0, 15.0], dtype=torch.float64)
    # below the cap (0.2 * 13.8 < log 100) it is the exact inverse kernel exp(-d Q)
    torch.testing.assert_close(g.staggered_score(score, small), score @ torch.linalg.matrix_exp(-0.2 * g.q))
    # beyond it each mode's gain e^{d |lam|} is capped at 100: finite, and equal to the truncated inverse
    gain = torch.exp(15.0 * -g.eigvals).clamp_max(100.0)
    want = score @ (g.eigvecs @ torch.diag(gain) @ g.eigvecs.T)
    got = g.staggered_score(score, large)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
