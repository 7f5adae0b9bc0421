"""The last step of another rule (``Sampler.final``, ``steps.WithFinal``) on exact toys (true score, every state
enumerated): Tweedie's step to time 0 on the uniform graph is the per-token posterior p(x0_i | x_t); from t = 1 a
single such step draws the data's per-position marginals; on the absorbing graph a Tweedie last step changes
nothing; the artifact round-trips and the CLI refuses it where it cannot apply."""

from types import SimpleNamespace

import pytest
import torch

from conftest import toy_law
from lsdd.errors import UserError
from lsdd.graphs import Absorbing, Uniform
from lsdd.noise import LogLinear
from lsdd.sampling.exact import ExactScore, all_sequences, exact_reverse_law, exact_sampler_law
from lsdd.sampling.sampler import Sampler
from lsdd.sampling.steps import WithFinal, get_rule

V, L = 3, 3
NOISE = LogLinear(1e-3)
UNI, ABS = Uniform(V), Absorbing(V)


def tv(p, q):
    return 0.5 * float((p - q).abs().sum())


@pytest.fixture(scope="module")
def p0():
    return toy_law(V, L, seed=5)


def _posterior_marginals(p0, x_t, sigma):
    """p(x0_i = v | x_t) by enumeration: (L, V) for one state x_t (L,)."""
    data = all_sequences(V, L)
    trans = UNI.transition(data, torch.full((data.shape[0],), float(sigma), dtype=torch.float64))  # (K, L, S)
    lik = trans.gather(-1, x_t.expand(data.shape[0], L)[..., None])[..., 0].prod(-1)  # q(x_t | x0)
    post = p0 * lik
    post = post / post.sum()
    out = torch.zeros(L, V, dtype=torch.float64)
    for i in range(L):
        out[i] = torch.zeros(V, dtype=torch.float64).index_add_(0, data[:, i], post)
    return out


@pytest.mark.parametrize("t", [0.3, 0.7, 1.0])
def test_tweedie_step_to_zero_is_the_posterior(p0, t):
    exact = ExactScore(p0, UNI, L)
    states = all_sequences(V, L)
    tt = torch.tensor(t, dtype=torch.float64)
    sigma = NOISE.total(tt)
    score = exact(states, sigma.expand(states.shape[0]))
    law = get_rule("tweedie")(UNI, NOISE, states, score, tt, torch.tensor(0.0, dtype=torch.float64)).dense()
    for b in range(states.shape[0]):
        want = _posterior_marginals(p0, states[b], sigma)
        assert torch.allclose(law[b], want, atol=1e-10), (t, states[b].tolist())


def test_one_step_with_a_tweedie_end_draws_the_data_marginals(p0):
    """From t = 1 (x_1 nearly uninformative) one Tweedie-to-eps step draws each token from its data marginal; one
    Euler step leaves most tokens at their uniform start."""
    exact = ExactScore(p0, UNI, L)
    data = all_sequences(V, L)
    marg = [torch.zeros(V, dtype=torch.float64).index_add_(0, data[:, i], p0) for i in range(L)]
    product = torch.tensor([float(torch.prod(torch.stack([marg[i][x[i]] for i in range(L)]))) for x in data],
                           dtype=torch.float64)
    final = Sampler.base("euler", 1, final="tweedie")
    law = exact_sampler_law(exact, UNI, NOISE, final.times_tensor(), L, **final.loop_args(UNI))
    euler = exact_sampler_law(exact, UNI, NOISE, final.times_tensor(), L, method="euler")
    uniform = torch.full_like(product, 1.0 / product.numel())
    assert tv(law, product) < 2e-3  # x_1 keeps e^-sigma_bar(1) ~ 1e-3 of its start
    assert tv(euler, uniform) < tv(euler, product)  # Euler's one step leaves the noise in


@pytest.mark.parametrize("m", [2, 4, 8])
def test_tweedie_end_is_closer_to_the_reverse_law_than_euler(p0, m):
    exact = ExactScore(p0, UNI, L)
    ref = exact_reverse_law(exact, NOISE, 1e-5)
    laws = {}
    for name, smp in (("euler", Sampler.euler(m)), ("final", Sampler.base("euler", m, final="tweedie"))):
        laws[name] = exact_sampler_law(exact, UNI, NOISE, smp.times_tensor(), L, **smp.loop_args(UNI))
    assert tv(laws["final"], ref) < tv(laws["euler"], ref)


def test_absorbing_graph_final_step_changes_nothing(p0):
    exact = ExactScore(p0, ABS, L)
    for movers in ("independent", "spread"):
        plain = Sampler.base("euler", 3, movers=movers)
        final = Sampler.base("euler", 3, movers=movers, final="tweedie")
        a = exact_sampler_law(exact, ABS, NOISE, plain.times_tensor(), L, **plain.loop_args(ABS))
        b = exact_sampler_law(exact, ABS, NOISE, final.times_tensor(), L, **final.loop_args(ABS))
        assert torch.allclose(a, b, atol=1e-12), movers


def test_final_step_rule_only_changes_the_last_step(p0):
    exact = ExactScore(p0, UNI, L)
    states = all_sequences(V, L)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    score = exact(states, NOISE.total(t).expand(states.shape[0]))
    rule = WithFinal("euler", "tweedie")
    for last, ref in ((False, "euler"), (True, "tweedie")):
        got = rule(UNI, NOISE, states, score, t, s, last=last).dense()
        want = get_rule(ref)(UNI, NOISE, states, score, t, s, last=last).dense()
        assert torch.equal(got, want)


def test_sampler_with_final_round_trips_and_checks(tmp_path):
    smp = Sampler.base("euler", 4, movers="spread", final="tweedie")
    assert "tweedie last step" in smp.describe()
    smp.save(tmp_path / "s.json")
    back = Sampler.load(tmp_path / "s.json")
    assert back == smp and back.final == "tweedie"
    assert "final" not in Sampler.euler(4).to_dict()  # files without one stay as they were
    with pytest.raises(UserError, match="final"):
        Sampler.base("euler", 4, final="theta-rk2")
    with pytest.raises(UserError, match="final"):
        Sampler.base("theta-rk2", 4, final="tweedie")


def test_cli_final_step(tmp_path, capsys):
    from lsdd.cli import main

    out = tmp_path / "x.npy"
    assert main(["sample", "--model", "text-uniform", "--sampler", "theta-rk2", "--final-step", "tweedie", "--nfe", "4",
                 "--out", str(out)]) == 2
    assert "--final-step applies" in capsys.readouterr().err and not out.exists()


def test_seeded_draws_repeat(p0):
    """Same seed, same output, with a final step on the uniform graph; the loop counts one call per step."""
    from lsdd.sampling.generate import sample

    model = SimpleNamespace(score_fn=ExactScore(p0, UNI, L), graph=UNI, noise=NOISE, length=L,
                            device=torch.device("cpu"))
    smp = Sampler.base("euler", 3, final="tweedie")
    a, b = sample(model, smp, 16, seed=3), sample(model, smp, 16, seed=3)
    assert torch.equal(a.x, b.x) and a.nfe == 3


@pytest.mark.parametrize("rule", ["euler", "tweedie"])
def test_value_temperature_on_the_uniform_graph(p0, rule):
    """lsd-c's beta off the absorbing graph: the move probability is the rule's, the jump target ~ s_y ** beta over
    y != x_i (Euler) or the staggered score ** beta (Tweedie); exact score, every state."""
    from lsdd.sampling.conditioned import ConditionedCoeff, ConditionedRule

    exact = ExactScore(p0, UNI, L)
    states = all_sequences(V, L)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)
    score = exact(states, NOISE.total(t).expand(states.shape[0]))
    beta = torch.tensor(1.7, dtype=torch.float64)
    plain = get_rule(rule)(UNI, NOISE, states, score, t, s)
    coeff = ConditionedCoeff(torch.tensor(1.0, dtype=torch.float64), beta)
    got = ConditionedRule(rule)(UNI, NOISE, states, score, t, s, coeff).dense()
    w = plain.weights.to(torch.float64).scatter(-1, states[..., None], 0.0) ** beta
    want = (1 - plain.move[..., None]) * torch.nn.functional.one_hot(states, V).to(torch.float64) \
        + plain.move[..., None] * w / w.sum(-1, keepdim=True)
    assert torch.allclose(got, want, atol=1e-12)
    with pytest.raises(ValueError, match="absorbing graph only"):
        ConditionedRule(rule)(UNI, NOISE, states, score, t, s,
                              ConditionedCoeff(torch.ones(states.shape, dtype=torch.float64), beta))
